"""Real redis-server processes for tests.

Use the fixtures by listing this module in the root conftest
(``pytest_plugins = ["tests.support.redis_server"]``) or importing them into a test module.
`redis_servers` is a factory: each call starts a fresh server (its own data dir, a free
loopback port) and the fixture stops them all after the test. A server that cannot start
raises `EmbeddedRedisError` with the server's log tail: the test errors, it never skips.
Worker processes started by a test connect with the URL (``server.url``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producers.embedded_redis import EmbeddedRedis
from shared.redis_client import redis_client


class RedisServers:
    """Starts real redis-server processes under `base_dir` and stops them on `close`."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._servers: list[EmbeddedRedis] = []
        self._seq = itertools.count()

    def start(self, *, password: str | None = None, data_dir: Path | None = None, port: int = 0) -> EmbeddedRedis:
        """Start a server (``port=0``: any free port) and wait until it answers."""
        directory = data_dir or self.base_dir / f"redis-{next(self._seq)}"
        server = EmbeddedRedis(directory, port=port, password=password, start_timeout_s=30.0)
        self._servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServers]:
    """Factory of real redis-server processes, all stopped after the test."""
    servers = RedisServers(tmp_path / "redis-servers")
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def redis_url(redis_servers: RedisServers) -> str:
    """URL of a fresh, empty redis-server for this test."""
    return redis_servers.start().url


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client (``decode_responses=True``) of this test's fresh redis-server."""
    client = redis_client(redis_url, socket_timeout_s=10.0)
    try:
        yield client
    finally:
        client.close()
