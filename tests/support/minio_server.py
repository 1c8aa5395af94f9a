"""A real MinIO server (built from its Go module by `make servers`) on loopback.

``minio_server`` (session) is one server for every test that needs plain S3; tests keep apart
with unique buckets. `MinioServer` starts more: with bucket notifications to a test's own
redis-server (``access`` format, target ``OMNIBIND``, as docker-compose wires it), with a
region, or to be stopped and started again at the same address on the same data dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import ServerProcess, require_binary
from tests.support.s3_server import HOST, free_loopback_port
from tools.servers import MINIO

ACCESS_KEY = "omnibind-minio-admin"
SECRET_KEY = "omnibind-minio-secret-Q7v4t1"
NOTIFY_TARGET = "OMNIBIND"


class MinioServer:
    """One MinIO process with its data dir; `start`/`stop`/`kill` keep the address."""

    def __init__(
        self,
        base_dir: Path,
        *,
        redis_address: str | None = None,
        redis_password: str | None = None,
        events_key: str = "omnibind:minio:events",
        region: str | None = None,
    ) -> None:
        binary = require_binary(MINIO)
        self.port = free_loopback_port()
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = region
        self.events_key = events_key
        self.data_dir = base_dir / "data"
        env = {
            "MINIO_ROOT_USER": ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": SECRET_KEY,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "on",  # a data dir on the root disk is fine for tests
        }
        if region:
            env["MINIO_REGION"] = region
        if redis_address:
            target = NOTIFY_TARGET
            env |= {
                f"MINIO_NOTIFY_REDIS_ENABLE_{target}": "on",
                f"MINIO_NOTIFY_REDIS_ADDRESS_{target}": redis_address,
                f"MINIO_NOTIFY_REDIS_KEY_{target}": events_key,
                f"MINIO_NOTIFY_REDIS_FORMAT_{target}": "access",
                f"MINIO_NOTIFY_REDIS_QUEUE_DIR_{target}": str(base_dir / "events-queue"),
            }
            if redis_password:
                env[f"MINIO_NOTIFY_REDIS_PASSWORD_{target}"] = redis_password
        console = free_loopback_port()
        command = [
            str(binary),
            "server",
            str(self.data_dir),
            "--address",
            f"{HOST}:{self.port}",
            "--console-address",
            f"{HOST}:{console}",
            "--quiet",
        ]
        self.process = ServerProcess(
            "minio", command, env, f"http://{HOST}:{self.port}/minio/health/ready", base_dir / "logs"
        )

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def notify_arn(self) -> str:
        """The ARN of the Redis target, as MinIO names it (the region is part of it)."""
        return f"arn:minio:sqs:{self.region or ''}:{NOTIFY_TARGET}:redis"

    def start(self) -> MinioServer:
        self.process.start()
        return self

    def stop(self, *, kill: bool = False) -> None:
        self.process.stop(kill=kill)

    def object_settings(self, **overrides: Any) -> dict[str, Any]:
        """The ``objects`` settings group for this server (pass to `Settings(objects=...)`)."""
        return {
            "backend": "minio",
            "endpoint": self.endpoint,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "secure": False,
            "region": self.region,
            **overrides,
        }

    def env(self) -> dict[str, str]:
        """``OMNIBIND_OBJECTS__*`` variables that point a subprocess at this server."""
        env = {
            "OMNIBIND_OBJECTS__BACKEND": "minio",
            "OMNIBIND_OBJECTS__ENDPOINT": self.endpoint,
            "OMNIBIND_OBJECTS__ACCESS_KEY": ACCESS_KEY,
            "OMNIBIND_OBJECTS__SECRET_KEY": SECRET_KEY,
            "OMNIBIND_OBJECTS__SECURE": "false",
        }
        if self.region:
            env["OMNIBIND_OBJECTS__REGION"] = self.region
        return env


@pytest.fixture(scope="session")
def minio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """One live MinIO for the whole session (no notifications); use unique buckets."""
    server = MinioServer(tmp_path_factory.mktemp("minio")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_minio_server(tmp_path: Path) -> Iterator[Any]:
    """`make_minio_server(**options) -> MinioServer` (started); all stopped after the test."""
    servers: list[MinioServer] = []

    def factory(**options: Any) -> MinioServer:
        server = MinioServer(tmp_path / f"minio-{len(servers)}", **options)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
