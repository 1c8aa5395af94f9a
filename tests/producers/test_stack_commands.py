from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from producers.stack import AUTO_MAX_BATCH, Stack, gpu_max_batch, settings_env, worker_argv
from shared.config import Settings, load_settings
from shared.cpus import available_cpus
from tests.support.redis_server import RedisServers
from workers.gpu import default_max_batch


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_gpu_worker_threads_hold_two_batches_of_messages() -> None:
    assert _option(worker_argv("gpu", Settings(gpu={"max_batch": 4})), "--concurrency") == "8"
    assert _option(worker_argv("gpu", Settings(model={"device": "cpu"})), "--concurrency") == "16"
    assert _option(worker_argv("gpu", Settings(model={"device": "cuda"})), "--concurrency") == "128"
    assert _option(worker_argv("gpu", Settings()), "--pool") == "threads"


def test_the_supervisors_auto_batch_matches_the_gpu_runners() -> None:
    assert AUTO_MAX_BATCH["cpu"] == default_max_batch(torch.device("cpu"))
    assert AUTO_MAX_BATCH["cuda"] == default_max_batch(torch.device("cuda"))


def test_the_gpu_pool_is_sized_for_the_device_torch_will_use_not_for_a_visible_driver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # nvidia-smi on the PATH with a CPU-only torch: the worker batches 8 at a time on the
    # CPU, so the pool must hold 16 messages, not 128 (the stack guessed CUDA from the tool).
    fake_smi = tmp_path / "nvidia-smi"
    fake_smi.write_text("#!/bin/sh\nexit 0\n")
    fake_smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    expected = default_max_batch(torch.device(device))
    assert gpu_max_batch(Settings()) == expected
    assert _option(worker_argv("gpu", Settings()), "--concurrency") == str(2 * expected)


def test_cpu_workers_are_prefork_with_one_process_per_core_by_default() -> None:
    argv = worker_argv("cpu", Settings(worker={"cpu_concurrency": 3}))
    assert (_option(argv, "--pool"), _option(argv, "--concurrency"), _option(argv, "-Q")) == ("prefork", "3", "cpu")
    assert _option(argv, "--prefetch-multiplier") == "1"


def test_by_default_cpu_workers_fork_one_process_per_cpu_the_container_may_use() -> None:
    argv = worker_argv("cpu", Settings())
    assert _option(argv, "--concurrency") == str(available_cpus())


def test_children_rebuild_exactly_the_parents_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    parent = Settings(
        data_dir=tmp_path,
        objects={"backend": "minio", "secret_key": "s3cret"},
        gpu={"max_batch": 5},
        moderation={"enabled": False},
    )
    env = settings_env(parent)
    assert env["OMNIBIND_OBJECTS__SECRET_KEY"] == "s3cret"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings() == parent


def test_the_supervisor_reaches_a_redis_whose_password_is_set_apart_from_the_url(redis_servers: RedisServers) -> None:
    password = "p/a#s?s%w@rd:x"
    server = redis_servers.start(password=password)
    settings = Settings(redis_url=f"redis://127.0.0.1:{server.port}/0", redis={"password": password})

    stack = Stack(settings)

    assert stack.live_pids() == set()  # logged in and read the heartbeats (none yet)
    assert stack.child_env()["OMNIBIND_REDIS_URL"] == stack.redis_url
