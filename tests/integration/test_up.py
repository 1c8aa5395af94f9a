"""`omnibind up` runs the embedded stack until Ctrl-C and then leaves nothing behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.stack import up_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _live_kinds(env: dict[str, str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "producers.cli", "status", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        return set()
    return {worker["kind"] for worker in json.loads(result.stdout)["workers"]}


def test_up_starts_redis_and_all_workers_and_ctrl_c_stops_everything(tmp_path: Path, model_cache: Path) -> None:
    env = up_env(tmp_path, model_cache)
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([sys.executable, "-m", "producers.cli", "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def all_ready() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            return _live_kinds(env) == {"cpu", "gpu", "index", "speech"}

        wait_until(all_ready, timeout_s=240, what="every kind of worker to be ready", poll_s=1)
        children = psutil.Process(up.pid).children(recursive=True)
        assert any("redis-server" in child.name() for child in children)
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists() or list(
            (tmp_path / "data" / "redis").glob("appendonly*")
        )

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[p.name() for p in alive]}"
    # The workers' own output (Celery banners, the root SecurityWarning) stays off the
    # terminal: it is in the worker logs (`omnibind up --verbose` relays it).
    terminal = (tmp_path / "up.log").read_text()
    assert "[tasks]" not in terminal and "SecurityWarning" not in terminal, terminal
    worker_logs = "".join(path.read_text() for path in (tmp_path / "data" / "logs").glob("cpu-*.log"))
    assert "[tasks]" in worker_logs
