"""A real S3-compatible server (moto's server mode) in a subprocess on a free loopback port.

Use the context manager anywhere (tests, benchmarks, worker integration tests)::

    with running_s3_server() as server:
        settings = make_settings(objects=server.object_settings())
        env = {**os.environ, **server.env()}   # for worker subprocesses

or the session fixture: ``from tests.support.s3_server import s3_server`` in a conftest.

The server keeps everything in memory and accepts any credentials, unless it is started with
``env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}``: then it checks them like AWS IAM and refuses
ours (AccessDenied / InvalidAccessKeyId), which is how access errors are tested.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.backoff import poll

HOST = "127.0.0.1"
ACCESS_KEY = "omnibind-test-access"
SECRET_KEY = "omnibind-test-secret-Kp9x2"
REGION = "us-east-1"
_START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
_POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class S3Server:
    """A running server: where it listens and the credentials to use."""

    endpoint: str  # host:port, as `ObjectStoreSettings.endpoint` wants it
    access_key: str
    secret_key: str
    region: str
    pid: int

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def object_settings(self, **overrides: Any) -> dict[str, Any]:
        """The ``objects`` settings group for this server (pass to `Settings(objects=...)`)."""
        return {
            "backend": "minio",
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "secure": False,
            "region": self.region,
            **overrides,
        }

    def env(self) -> dict[str, str]:
        """``OMNIBIND_OBJECTS__*`` variables that point a subprocess at this server."""
        return {
            "OMNIBIND_OBJECTS__BACKEND": "minio",
            "OMNIBIND_OBJECTS__ENDPOINT": self.endpoint,
            "OMNIBIND_OBJECTS__ACCESS_KEY": self.access_key,
            "OMNIBIND_OBJECTS__SECRET_KEY": self.secret_key,
            "OMNIBIND_OBJECTS__SECURE": "false",
            "OMNIBIND_OBJECTS__REGION": self.region,
        }


# Below Linux's ephemeral range (32768-60999 by default): the OS never hands these out as the
# source port of an outgoing connection, so a server restarted on its old port after kill -9
# cannot find it taken by some client's connection (a Weaviate restarted in the production
# chaos test once died with "bind: address already in use" on its gRPC port).
_SERVER_PORTS = range(20000, 32768)
_pick = random.Random()


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range."""
    for _ in range(200):
        port = _pick.choice(_SERVER_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all tried were busy: let the OS pick
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_s3_server(*, env: Mapping[str, str] | None = None, startup_timeout_s: float = 60.0) -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on a free loopback port, wait until it answers HTTP,
    yield it, and stop it (terminate, then kill) on exit.

    `env` adds environment variables for the server. Raises `RuntimeError` with the
    server's log when it does not come up.
    """
    with tempfile.TemporaryDirectory(prefix="omnibind-s3-") as log_dir:
        for attempt in range(_START_ATTEMPTS):
            port = free_loopback_port()
            log_path = Path(log_dir) / f"moto-{attempt}.log"
            process = spawn_s3_server(port, log_path, env)
            try:
                if wait_until_up(process, port, startup_timeout_s):
                    yield S3Server(f"{HOST}:{port}", ACCESS_KEY, SECRET_KEY, REGION, process.pid)
                    return
            finally:
                stop_s3_server(process)
            if attempt == _START_ATTEMPTS - 1:
                raise RuntimeError(f"moto server did not start on {HOST}:{port}:\n{log_path.read_text()[-4000:]}")


def spawn_s3_server(port: int, log_path: Path, env: Mapping[str, str] | None) -> subprocess.Popen[bytes]:
    server_env = {**os.environ, "AWS_DEFAULT_REGION": REGION, **(env or {})}
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env,
        )


def wait_until_up(process: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    """True once the server answers on `port`; False if it exits or `timeout_s` passes."""

    def up_or_exited() -> bool | None:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/moto-api/", timeout=1.0) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        return None

    return poll(up_or_exited, timeout_s=timeout_s, interval_s=_POLL_INTERVAL_S) is True


def stop_s3_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole test session. Tests keep apart by using unique buckets."""
    with running_s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(moto_s3_server: S3Server) -> S3Server:
    """The session's S3 server (moto; see `moto_s3_server`)."""
    return moto_s3_server


class RestartableS3Server:
    """A moto S3 server on one fixed loopback port that can be stopped and started again on
    that port: object storage going away for a while, then coming back at the same address.

    Moto keeps objects in memory, so a restart loses them; a test puts back what a real
    MinIO would have kept on disk. Use as a context manager (stopped on exit).
    """

    def __init__(self, log_dir: Path, *, startup_timeout_s: float = 60.0) -> None:
        self.port = free_loopback_port()
        self.log_dir = log_dir
        self.startup_timeout_s = startup_timeout_s
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> S3Server:
        return S3Server(
            f"{HOST}:{self.port}", ACCESS_KEY, SECRET_KEY, REGION, self._process.pid if self._process else 0
        )

    def start(self) -> RestartableS3Server:
        self.starts += 1
        self._process = spawn_s3_server(self.port, self.log_dir / f"moto-{self.starts}.log", None)
        if not wait_until_up(self._process, self.port, self.startup_timeout_s):
            stop_s3_server(self._process)
            raise RuntimeError(f"moto server did not start again on {HOST}:{self.port}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_s3_server(self._process)
            self._process = None

    def __enter__(self) -> RestartableS3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
