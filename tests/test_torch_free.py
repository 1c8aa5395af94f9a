"""Torch only where the model runs: producers (CLI, HTTP API, bridge, webhooks) and the cpu
worker's processes never import torch (a cpu pool process went from ~340 to ~80 MB RSS
without it; docs/performance.md). Only the gpu worker's runner loads it: its entry point
(`celery -A workers.gpu_worker`) gives the app the runner, built at start-up
(`workers.startup.start_worker`).

Each check is a fresh interpreter (real subprocesses: sys.modules of this test process has
torch long since); the static side of the same rule is the import-linter contracts in
pyproject.toml (tests/test_layering.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack
from shared.events import UploadStatus
from shared.queue import TaskName
from tests.support.stack import SAMPLES, stack_settings
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]

# Prints the import chain that loads torch first, so a failure says which import to cut.
WATCH_TORCH = """
import sys, traceback
class _WatchTorch:
    chain = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and _WatchTorch.chain is None:
            _WatchTorch.chain = "".join(traceback.format_stack(limit=40))
        return None
sys.meta_path.insert(0, _WatchTorch())
def _torch_free(what):
    assert "torch" not in sys.modules, f"{what} imported torch:\\n{_WatchTorch.chain}"
"""

ENTRY_POINTS = [
    "omnibind",  # the public package: `import omnibind`
    "producers.cli",  # the `omnibind` command and every subcommand module it registers
    "producers.cli.bridge",
    "producers.cli.dead",
    "producers.cli.moderation",
    "producers.cli.ops",
    "producers.cli.serve",
    "producers.cli.stack",
    "producers.cli.uploads",
    "producers.demo",
    "producers.watch",
    "producers.http.app",  # the API
    "producers.http.server",
    "producers.bridge.service",  # the bridge
    "producers.webhooks.service",
    "workers.app",
    "workers.tasks.cpu",
    "workers.preprocess",
    # Preprocessing (shared.media, shared.imagebind.{image,text,audio,fbank,resample}) is
    # covered module by module by test_only_the_model_modules_import_torch.
]

# The modules that need torch: the model, its inputs and loading, and the gpu runner.
MODEL_MODULES = {
    "shared.imagebind.checkpoint",
    "shared.imagebind.embed",
    "shared.imagebind.inputs",
    "shared.imagebind.layers",
    "shared.imagebind.model",
    "shared.imagebind.normalize",
    "shared.models.imagebind",
    "shared.models.loader",
    "shared.models.perception",
    "workers.gpu",
    "workers.gpu_worker",  # the gpu worker's entry point: the app with the model runner
    "workers.all_worker",  # one worker of every queue: both runners
    "workers.reindex",  # `omnibind reindex` loads the new model in its own process
}


def run_python(code: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WATCH_TORCH + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def assert_ran(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_importing_a_process_entry_point_leaves_torch_unloaded(module: str) -> None:
    assert_ran(run_python(f"import {module}\n_torch_free({module!r})"))


def test_the_celery_app_with_every_task_module_leaves_torch_unloaded() -> None:
    # What `celery -A workers.app worker` does for every kind before consuming: all task names
    # must be known to every worker (routing), so all three task modules are imported.
    code = f"""
from workers.app import app
app.loader.import_default_modules()
missing = set({sorted(map(str, TaskName))!r}) - set(app.tasks)
assert not missing, f"task names unknown to the app: {{sorted(missing)}}"
_torch_free("workers.app with its task modules")
"""
    assert_ran(run_python(code))


def test_only_the_speech_worker_s_entry_point_loads_the_whisper_runtime() -> None:
    # faster-whisper (ctranslate2, onnxruntime) costs every process that imports it; the app and
    # its task modules must not, the speech entry point must, and hands the app its runner.
    code = """
import sys
from workers.app import app
app.loader.import_default_modules()
assert "faster_whisper" not in sys.modules and app.speech_runner is None
import workers.speech_worker
assert "faster_whisper" in sys.modules and app.speech_runner is not None
assert app.resources._speech_runner is app.speech_runner
import workers.all_worker
assert app.gpu_runner is not None and app.resources._gpu_runner is app.gpu_runner
"""
    assert_ran(run_python(code))


def test_only_the_model_modules_import_torch() -> None:
    # Every other module of the three packages, imported one after another in one process:
    # the first one after which torch is loaded is named.
    code = f"""
import importlib, pkgutil
model_modules = {sorted(MODEL_MODULES)!r}
for package in ("shared", "producers", "workers"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if info.name in model_modules or info.name.endswith(".__main__"):
            continue
        importlib.import_module(info.name)
        _torch_free(info.name)
"""
    assert_ran(run_python(code, timeout_s=240))


def test_demo_finds_a_local_checkpoint_and_leaves_the_tiny_one_to_the_gpu_worker_without_torch(
    tmp_path: Path,
) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    code = f"""
from pathlib import Path
from producers.demo import ensure_checkpoint
from shared.config import Settings
cache = Path({str(tmp_path / "cache")!r})
ensure_checkpoint(Settings(model={{"name": "tiny", "cache_dir": cache}}))
ensure_checkpoint(Settings(model={{"name": "tiny", "cache_dir": cache, "checkpoint": {str(checkpoint)!r}}}))
_torch_free("omnibind demo's checkpoint check")
"""
    assert_ran(run_python(code))


def libtorch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def wait_preprocessed(client: Client, upload_ids: list[str], timeout_s: float = 90.0) -> None:
    pending = set(upload_ids)

    def all_preprocessed() -> bool:
        for upload_id in list(pending):
            record = client.status(upload_id)
            assert record is None or record.status is not UploadStatus.FAILED, record
            if record is not None and record.status is UploadStatus.PREPROCESSED:
                pending.discard(upload_id)
        return not pending

    wait_until(all_preprocessed, timeout_s=timeout_s, what=lambda: f"{sorted(pending)} preprocessed", poll_s=0.2)


@pytest.mark.integration
def test_a_cpu_worker_preprocesses_every_modality_without_loading_torch(tmp_path: Path, model_cache: Path) -> None:
    settings = stack_settings(tmp_path, model_cache)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with Stack(settings, kinds=("cpu",), log_dir=log_dir).start(ready_timeout_s=120) as stack:
        connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
        with Client(connected, source="test") as client:
            ids = [
                client.submit(SAMPLES / "rgb_landscape_640x427.jpg"),
                client.submit(SAMPLES / "clip_44100_1s.mp3"),  # decoded, resampled, fbank
                client.submit_text("a dog barking in the rain"),
            ]
            # Nothing embeds (no gpu worker): "preprocessed" is as far as these uploads go.
            wait_preprocessed(client, ids)
        (worker,) = stack.workers
        main = psutil.Process(worker.process.pid)
        pool = main.children(recursive=True)
        assert pool, "the cpu worker has no pool processes"
        for process in [main, *pool]:
            assert not libtorch_mapped(process.pid), f"libtorch is mapped into pid {process.pid} ({process.cmdline()})"
