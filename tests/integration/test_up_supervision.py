"""`omnibind up` supervises what it starts: exactly one worker process tree per kind.

Real `omnibind up` subprocesses, real redis-server processes, real Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.s3_server import free_loopback_port

pytestmark = pytest.mark.integration


class Up:
    """A running `omnibind up` subprocess with its output in a file."""

    def __init__(self, tmp_path: Path, model_cache: Path) -> None:
        self.port = free_loopback_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
        self.env.update(
            {
                "OMNIBIND_DATA_DIR": str(tmp_path / "data"),
                "OMNIBIND_MODEL__NAME": "tiny",
                "OMNIBIND_MODEL__CACHE_DIR": str(model_cache),
                "OMNIBIND_REDIS__EMBEDDED_PORT": str(self.port),
                "OMNIBIND_WORKER__CPU_CONCURRENCY": "1",
            }
        )
        self.log_path = tmp_path / "up.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "up"], env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output:
            assert self.process.poll() is None, f"omnibind up exited:\n{self.output}"
            assert time.monotonic() < deadline, f"never printed {text!r}:\n{self.output}"
            time.sleep(0.5)

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def redis_server(self) -> psutil.Process:
        servers = [child for child in self.children() if "redis-server" in child.name()]
        assert len(servers) == 1, servers
        return servers[0]

    def omnibind(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args], env=self.env, capture_output=True, text=True, timeout=300
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def up(tmp_path: Path, model_cache: Path) -> Iterator[Up]:
    running = Up(tmp_path, model_cache)
    try:
        running.wait_for_output("omnibind is up")
        yield running
    finally:
        running.stop()


def worker_trees(children: list[psutil.Process]) -> Counter[str]:
    """Worker kinds of `omnibind up`'s direct children (each worker's main process; a
    prefork worker's pool processes are its own children)."""
    kinds: Counter[str] = Counter()
    for child in children:
        argv = child.cmdline()
        if "celery" in argv and "-Q" in argv:
            kinds[argv[argv.index("-Q") + 1]] += 1
    return kinds


def test_up_runs_exactly_one_worker_process_tree_per_kind(up: Up) -> None:
    assert worker_trees(up.children()) == {"cpu": 1, "gpu": 1, "index": 1}
    assert up.output.count("started gpu worker") == 1, up.output
