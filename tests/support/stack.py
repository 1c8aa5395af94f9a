"""A factory for the embedded stack (real redis-server + real Celery worker processes) in
tests, with the tiny random-weight model, everything under the test's tmp dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack
from shared.config import Settings
from tests.support.s3_server import free_loopback_port

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningStack:
    stack: Stack
    settings: Settings  # with redis_url set: what clients and CLI subprocesses use
    client: Client

    def cli_env(self) -> dict[str, str]:
        return self.stack.child_env()

    def cli(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """`omnibind ARGS` in a subprocess against this stack (from the repository root)."""
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args],
            env=self.cli_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def stack_settings(root: Path, model_cache: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": root / "data",
        "model": {"name": "tiny", "cache_dir": model_cache},
        "redis": {"embedded_port": 0},
        "worker": {
            "cpu_concurrency": 2,
            "visibility_timeout_s": 60,
            "task_time_limit_s": 20,
            "retry_backoff_s": 0.5,
            "retry_backoff_max_s": 5,
        },
        "gpu": {"max_batch": 8, "max_wait_ms": 20},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return Settings(**base)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session: the tiny random checkpoint is written once."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def start_stack(tmp_path: Path, model_cache: Path) -> Iterator[Any]:
    """`start_stack(**settings_overrides) -> RunningStack`; every stack is stopped after the test."""
    running: list[RunningStack] = []

    def factory(**overrides: Any) -> RunningStack:
        root = tmp_path / f"stack{len(running)}"
        settings = stack_settings(root, model_cache, **overrides)
        log_dir = root / "logs"
        log_dir.mkdir(parents=True)
        stack = Stack(settings, log_dir=log_dir).start(ready_timeout_s=180)
        connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
        handle = RunningStack(stack, connected, Client(connected, source="test"))
        running.append(handle)
        return handle

    yield factory
    for handle in running:
        handle.client.close()
        handle.stack.stop()


def up_env(tmp_path: Path, model_cache: Path, **extra: str) -> dict[str, str]:
    """Environment for an `omnibind up` / `omnibind demo` subprocess: this process's variables
    without OMNIBIND_*, the tiny model, data under `tmp_path`, a fixed free Redis port, one cpu
    process; `extra` adds or overrides variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
    env.update(
        {
            "OMNIBIND_DATA_DIR": str(tmp_path / "data"),
            "OMNIBIND_MODEL__NAME": "tiny",
            "OMNIBIND_MODEL__CACHE_DIR": str(model_cache),
            "OMNIBIND_REDIS__EMBEDDED_PORT": str(free_loopback_port()),
            "OMNIBIND_WORKER__CPU_CONCURRENCY": "1",
            **extra,
        }
    )
    return env


def sample_upload_dir(target: Path) -> Path:
    """The committed samples (images of 6 formats, audio of 7 containers) plus text files, in
    one folder to ingest."""
    target.mkdir(parents=True, exist_ok=True)
    for path in SAMPLES.iterdir():
        if path.suffix not in {".json"}:
            shutil.copy(path, target / path.name)
    texts = json.loads((SAMPLES / "texts.json").read_text(encoding="utf-8"))
    for name, text in texts.items():
        if text.strip():
            (target / f"text-{name}.txt").write_text(text, encoding="utf-8")
    return target
