"""`omnibind serve`, `omnibind metrics`, `omnibind flower` and `omnibind probe` as real
subprocesses against a real redis-server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
    env.update({"OMNIBIND_REDIS_URL": redis_url, "OMNIBIND_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


def omnibind(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@contextmanager
def running(args: list[str], env: dict[str, str], probe_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `omnibind ARGS` until `omnibind probe PROBE_URL` passes; SIGTERM it afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            return omnibind("probe", probe_url, "--timeout", "2", env=env).returncode == 0

        wait_until(up, timeout_s=START_TIMEOUT_S, what=lambda: f"the probe to pass:\n{log.read_text()}", poll_s=0.3)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_answers_http_and_stops_cleanly_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(redis_url, tmp_path, OMNIBIND_API__KEYS="k1", OMNIBIND_LOG_FORMAT="json")
    url = f"http://127.0.0.1:{port}"
    with running(["serve", "--port", str(port)], env, f"{url}/healthz", tmp_path / "serve.log") as process:
        reply = httpx.post(f"{url}/v1/uploads", json={"id": "via-cli", "text": "hi"}, headers={"X-API-Key": "k1"})
        assert reply.status_code == 202
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal for the parent to see.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    lines = (tmp_path / "serve.log").read_text().splitlines()
    assert any("Application shutdown complete" in line for line in lines)
    accepted = [line for line in lines if '"upload_id": "via-cli"' in line]
    assert accepted and '"message": "accepted text upload from api"' in accepted[0]


def test_serve_refuses_a_public_bind_without_keys(redis_url: str, tmp_path: Path) -> None:
    result = omnibind("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=cli_env(redis_url, tmp_path))
    assert result.returncode == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in result.stderr


def test_metrics_exporter_serves_pipeline_metrics(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with running(["metrics", "--port", str(port)], cli_env(redis_url, tmp_path), url, tmp_path / "metrics.log"):
        text = httpx.get(url).text
    assert "omnibind_redis_up 1.0" in text
    assert 'omnibind_queue_length{queue="cpu"} 0.0' in text
    assert "# TYPE omnibind_uploads_failed_total counter" in text


def test_flower_runs_against_the_omnibind_broker(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    args = ["flower", f"--port={port}", "--address=127.0.0.1"]
    with running(args, cli_env(redis_url, tmp_path), f"http://127.0.0.1:{port}/healthcheck", tmp_path / "flower.log"):
        assert httpx.get(f"http://127.0.0.1:{port}/healthcheck").text == "OK"


def test_probe_fails_for_errors_and_for_nothing_listening(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path)
    nothing = omnibind("probe", f"http://127.0.0.1:{free_port()}/healthz", "--timeout", "2", env=env)
    assert nothing.returncode == 1 and "Connection refused" in nothing.stderr


def test_flower_binds_loopback_unless_told_otherwise(redis_url: str, tmp_path: Path) -> None:
    from producers.cli.ops import flower_arguments

    assert flower_arguments(("--port=5555",), {}) == ["--port=5555", "--address=127.0.0.1"]
    assert flower_arguments(("--address", "::1"), {}) == ["--address", "::1"]
    assert flower_arguments((), {"FLOWER_ADDRESS": "localhost"}) == []
    exposed = ("--address=0.0.0.0", "--basic-auth=admin:s3cret")
    assert flower_arguments(exposed, {}) == list(exposed)
    assert flower_arguments(("--address=10.1.2.3",), {"FLOWER_BASIC_AUTH": "admin:s3cret"}) == ["--address=10.1.2.3"]

    # Without a user:password, a non-loopback bind is refused before Flower starts.
    port = free_port()
    for args, extra in (
        (["--address=0.0.0.0"], {}),
        (["--address", ""], {}),
        ([], {"FLOWER_ADDRESS": "0.0.0.0"}),
        (["--address=0.0.0.0", "--basic-auth=admin"], {}),
        (["--address=0.0.0.0"], {"FLOWER_BASIC_AUTH": ":"}),
    ):
        refused = omnibind("flower", f"--port={port}", *args, env=cli_env(redis_url, tmp_path, **extra), timeout_s=60)
        assert refused.returncode == 1, (args, refused.stderr)
        assert "refusing to run Flower" in refused.stderr and "--basic-auth=USER:PASSWORD" in refused.stderr, args
