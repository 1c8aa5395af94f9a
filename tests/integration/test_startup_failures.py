"""A worker that cannot do its job must not look healthy: a gpu worker whose checkpoint is
truncated or belongs to another model exits non-zero with what is wrong and the fix, so
`Stack.start`, `omnibind up` and `omnibind demo` stop with that message and readiness fails;
an index worker whose vector store is unreachable at start keeps retrying without reporting
ready, and one whose store configuration is wrong exits non-zero.

Real redis-server, real Celery worker processes, real (broken) checkpoint files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from pydantic import SecretStr

from producers.stack import Stack, StackError, WorkerProcess
from shared.heartbeat import live_workers
from shared.redis_client import redis_client
from tests.support.api_server import ApiServer
from tests.support.s3_server import free_loopback_port
from tests.support.stack import stack_settings, up_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

EXIT_CONFIG = 3


def truncated_checkpoint(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    return path


def another_models_checkpoint(path: Path) -> Path:
    torch.save({"classifier.weight": torch.zeros(4, 4), "classifier.bias": torch.zeros(4)}, path)
    return path


def omnibind(args: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def wait_for_exit_or_heartbeat(stack: Stack, worker: WorkerProcess, timeout_s: float = 180) -> int | None:
    """The worker's exit code, or None if it reported ready (a heartbeat) instead."""
    wait_until(
        lambda: worker.process.poll() is not None or worker.process.pid in stack.live_pids(worker.kind),
        timeout_s=timeout_s,
        what=lambda: f"the {worker.kind} worker to exit or get ready:\n{worker.log_tail()}",
        poll_s=0.2,
    )
    return worker.process.poll()


def wait_for_log(worker: WorkerProcess, text: str, *, times: int = 1, timeout_s: float = 120) -> None:

    def logged() -> bool:
        assert worker.process.poll() is None, f"{worker.kind} worker exited:\n{worker.log_tail()}"
        return worker.log_tail(10_000).count(text) >= times

    wait_until(
        logged, timeout_s=timeout_s, what=lambda: f"{text!r} logged {times} times:\n{worker.log_tail()}", poll_s=0.2
    )


@pytest.fixture
def make_stack(tmp_path: Path, model_cache: Path) -> Any:
    """`make_stack(kinds, **settings_overrides) -> Stack` (not started); all stopped after the test."""
    stacks: list[Stack] = []

    def factory(kinds: tuple[str, ...], **overrides: Any) -> Stack:
        root = tmp_path / f"stack{len(stacks)}"
        settings = stack_settings(root, model_cache, **overrides)
        (root / "logs").mkdir(parents=True)
        stack = Stack(settings, kinds=kinds, log_dir=root / "logs")  # type: ignore[arg-type]
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


@pytest.mark.parametrize(
    ("make_checkpoint", "what"),
    [(truncated_checkpoint, "truncated, corrupt"), (another_models_checkpoint, "does not fit")],
    ids=["truncated", "another-model"],
)
def test_a_broken_checkpoint_stops_the_stack_start_with_the_file_the_problem_and_the_fix(
    make_stack: Callable[..., Stack], tmp_path: Path, make_checkpoint: Callable[[Path], Path], what: str
) -> None:
    checkpoint = make_checkpoint(tmp_path / "broken.pt")
    stack = make_stack(("gpu",), model={"checkpoint": checkpoint})
    with pytest.raises(StackError) as caught:
        stack.start(ready_timeout_s=180)
    message = str(caught.value)
    assert f"gpu worker exited with code {EXIT_CONFIG}" in message
    assert str(checkpoint) in message and what in message
    assert "OMNIBIND_MODEL__CHECKPOINT" in message  # the fix names the setting to change


def test_readiness_fails_while_the_gpu_worker_cannot_load_its_model(
    make_stack: Callable[..., Stack], serve_api: Callable[..., ApiServer], tmp_path: Path
) -> None:
    stack = make_stack(("cpu", "index")).start(ready_timeout_s=180)
    stack.extra_env["OMNIBIND_MODEL__CHECKPOINT"] = str(truncated_checkpoint(tmp_path / "broken.pt"))
    gpu = stack.spawn("gpu")

    assert wait_for_exit_or_heartbeat(stack, gpu) == EXIT_CONFIG, gpu.log_tail()

    health = omnibind(["health", "--queue", "gpu"], stack.child_env())
    assert health.returncode != 0 and "no live gpu worker" in health.stderr
    connected = stack.settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
    with httpx.Client(base_url=serve_api(connected).url, timeout=30) as http:
        ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["workers"] == {"cpu": 1, "gpu": 0, "index": 1, "speech": 0}


def test_up_with_a_broken_checkpoint_exits_with_the_message_instead_of_saying_up(
    tmp_path: Path, model_cache: Path
) -> None:
    checkpoint = truncated_checkpoint(tmp_path / "broken.pt")
    env = up_env(tmp_path, model_cache, OMNIBIND_MODEL__CHECKPOINT=str(checkpoint))
    result = omnibind(["up"], env, timeout_s=400)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "omnibind is up" not in output
    assert f"gpu worker exited with code {EXIT_CONFIG}" in output
    assert str(checkpoint) in output and "OMNIBIND_MODEL__CHECKPOINT" in output


def test_demo_with_a_broken_checkpoint_stops_with_the_message(tmp_path: Path, model_cache: Path) -> None:
    checkpoint = another_models_checkpoint(tmp_path / "broken.pt")
    env = up_env(tmp_path, model_cache, OMNIBIND_MODEL__CHECKPOINT=str(checkpoint), HOME=str(tmp_path / "home"))
    result = omnibind(["demo", "--model", "tiny", "--timeout", "60"], env, timeout_s=400)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "sample files" not in output, "no upload is submitted to a stack without a model"
    assert str(checkpoint) in output and "does not fit" in output and "OMNIBIND_MODEL__CHECKPOINT" in output
    assert "Traceback" not in output


def weaviate_at(url: str) -> dict[str, Any]:
    return {"vectors": {"backend": "weaviate", "url": url, "timeout_init_s": 2}}


def test_index_worker_keeps_retrying_and_stays_not_ready_while_the_vector_store_is_unreachable(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack((), **weaviate_at(f"http://127.0.0.1:{free_loopback_port()}")).start()
    index = stack.spawn("index")

    wait_for_log(index, "vector store not reachable", times=2)

    assert index.process.poll() is None, "an unreachable store is transient: the worker waits"
    client = redis_client(stack.redis_url or "", decode_responses=True)
    try:
        assert live_workers(client, stack.settings.queue_prefix, "index") == []
    finally:
        client.close()
    health = omnibind(["health", "--queue", "index"], stack.child_env())
    assert health.returncode != 0 and "no live index worker" in health.stderr


def test_index_worker_exits_non_zero_on_a_vector_store_configuration_error(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(("index",), **weaviate_at("http://user:secret@127.0.0.1:1"))
    with pytest.raises(StackError) as caught:
        stack.start(ready_timeout_s=120)
    message = str(caught.value)
    assert f"index worker exited with code {EXIT_CONFIG}" in message
    assert "OMNIBIND_VECTORS__API_KEY" in message
    assert "secret" not in message
