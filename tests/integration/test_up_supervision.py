"""`omnibind up` supervises what it starts: exactly one worker process tree per kind, and an
embedded redis-server killed with SIGKILL is restarted on the same port (same data dir,
AOF) — or, when it cannot come back, everything stops with the reason.

Real `omnibind up` subprocesses, real redis-server processes, real Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from producers.embedded_redis import find_redis_server
from producers.stack import Stack, StackError
from tests.support.s3_server import free_loopback_port
from tests.support.stack import stack_settings
from tests.support.waiting import wait_until

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

        def printed() -> bool:
            assert self.process.poll() is None, f"omnibind up exited:\n{self.output}"
            return text in self.output

        wait_until(printed, timeout_s=timeout_s, what=lambda: f"{text!r} in:\n{self.output}", poll_s=0.5)

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


def server_pid(port: int) -> int | None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()


def test_up_runs_exactly_one_worker_process_tree_per_kind(up: Up) -> None:
    assert worker_trees(up.children()) == {"cpu": 1, "gpu": 1, "index": 1, "speech": 1}
    assert up.output.count("started gpu worker") == 1, up.output


def test_up_restarts_a_killed_redis_server_on_the_same_port_and_uploads_still_end_indexed(
    up: Up, tmp_path: Path
) -> None:
    killed = up.redis_server()
    os.kill(killed.pid, signal.SIGKILL)

    up.wait_for_output(f"redis-server was restarted on port {up.port}", timeout_s=120)
    restarted = up.redis_server()
    assert restarted.pid != killed.pid
    assert server_pid(up.port) == restarted.pid
    assert f"redis-server (pid {killed.pid}, port {up.port}) died" in up.output

    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "after-the-crash.txt").write_text("a dog barking at the mail carrier", encoding="utf-8")
    ingest = up.omnibind("ingest", str(folder), "--wait", "--timeout", "240")
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr + up.output
    assert "indexed 1, failed 0" in ingest.stdout
    assert up.process.poll() is None


def _wrapper(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_killed_redis_server_comes_back_with_its_data_on_the_same_port(tmp_path: Path, model_cache: Path) -> None:
    settings = stack_settings(tmp_path, model_cache, redis={"embedded_port": free_loopback_port()})
    stack = Stack(settings, kinds=(), redis_restart_backoff_s=(0.1,)).start()
    try:
        assert stack.redis is not None and stack.redis.pid is not None
        port, first_pid = stack.redis.port, stack.redis.pid
        client = redis.Redis(host="127.0.0.1", port=port)
        client.config_set("appendfsync", "always")  # the reply comes after the AOF write
        client.set("kept", "yes")
        client.close()
        assert stack.supervise_redis() is False, "a running server is left alone"

        os.kill(first_pid, signal.SIGKILL)
        wait_until(stack.supervise_redis, timeout_s=30, what="the dead server to be noticed", poll_s=0.1)

        assert stack.redis.port == port and stack.redis.pid != first_pid
        assert server_pid(port) == stack.redis.pid
        assert redis.Redis(host="127.0.0.1", port=port).get("kept") == b"yes"
    finally:
        stack.stop()


def test_a_redis_server_that_cannot_come_back_stops_the_stack_with_the_reason(
    tmp_path: Path, model_cache: Path
) -> None:
    server_bin = _wrapper(tmp_path / "redis-server", f'exec {find_redis_server()} "$@"')
    settings = stack_settings(
        tmp_path, model_cache, redis={"embedded_port": free_loopback_port(), "server_bin": server_bin}
    )
    stack = Stack(settings, kinds=(), redis_restart_backoff_s=(0.1, 0.1, 0.1)).start()
    try:
        assert stack.redis is not None and stack.redis.pid is not None
        _wrapper(server_bin, "echo 'simulated: the disk is gone' >&2\nexit 1")
        os.kill(stack.redis.pid, signal.SIGKILL)
        with pytest.raises(StackError) as caught:
            wait_until(stack.supervise_redis, timeout_s=30, what="the dead server to be noticed", poll_s=0.1)
        message = str(caught.value)
        assert "did not come back after 3 restarts" in message
        assert "simulated: the disk is gone" in message
    finally:
        stack.stop()
