"""Real redis-server processes for tests.

Use the fixtures by listing this module in the root conftest
(``pytest_plugins = ["tests.support.redis_server"]``) or importing them into a test module.
Servers are real (`EmbeddedRedis`: its own data dir, a free loopback port); one that cannot
start raises `EmbeddedRedisError` with the server's log tail: the test errors, it never skips.
Worker processes started by a test connect with the URL.

Which fixture:

* `redis_url` / `redis_conn` (most tests): the URL of, and a client (``decode_responses=True``)
  of, the server *shared by every test of this pytest process* (one per xdist worker, started
  by the first test that asks, killed at the end of the session). Before each test it is
  reset (`SharedRedis.reset`): every other client connection (normal and pub/sub) is killed,
  a ``CLIENT PAUSE`` lifted, every ``CONFIG SET`` value put back to what the server started
  with, then FLUSHALL, SCRIPT FLUSH and CONFIG RESETSTAT. A server that died, or that the reset
  cannot bring back (a changed password or ACL, a setting that cannot be set back, a busy
  script, a ``REPLICAOF``), is replaced by a fresh one on another port: read the URL from the
  fixture in each test, never keep it across tests. A test may write anything and change any
  CONFIG value; threads and processes it starts against the server must be stopped by the end
  of the test (the fixtures that start them do), since a live client reconnects after the
  reset and would write into the next test's data.
* `own_redis_url` / `own_redis_conn`: a fresh server for this test alone, stopped after it, for
  a test that reads server-wide state others could skew (INFO commandstats, client counts).
* `redis_servers`: a factory; each ``start(password=, data_dir=, port=)`` starts a fresh server,
  all stopped after the test. Use it (not `redis_url`) for a test that stops, kills, restarts or
  SIGSTOPs the server, needs a password, a fixed port or data dir, reads its files (the AOF),
  points another server (MinIO) at it, or needs several servers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producers.embedded_redis import EmbeddedRedis
from shared.redis_client import redis_client

log = logging.getLogger(__name__)


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


class NotResettable(Exception):
    """The shared server cannot be brought back to its starting state: replace it."""


class SharedRedis:
    """One redis-server reused by the tests of a process, reset between them (`fresh_url`)."""

    def __init__(self, base_dir: Path) -> None:
        self._servers = RedisServers(base_dir)
        self._server: EmbeddedRedis | None = None
        self._admin: redis.Redis | None = None
        self._config: dict[str, str] = {}  # CONFIG GET * right after start
        self._acl: list[str] = []
        self.replaced = 0  # servers started again because the reset could not be done

    @property
    def server(self) -> EmbeddedRedis:
        if self._server is None:
            self._start()
        assert self._server is not None
        return self._server

    def fresh_url(self) -> str:
        """The URL of the shared server in its starting state: reset, or replaced if it cannot be."""
        if self._server is None:
            self._start()
        else:
            try:
                self.reset()
            except (NotResettable, redis.RedisError) as exc:
                log.warning("shared redis-server cannot be reset (%s): starting a fresh one", exc)
                self._replace()
        return self.server.url

    def reset(self) -> None:
        """Undo what a test may have left: other clients, a pause, CONFIG changes, data,
        scripts, stats. Raises `NotResettable` (or a `redis.RedisError`) when it cannot."""
        server, admin = self._server, self._admin
        assert server is not None and admin is not None
        if server.exit_code() is not None:
            raise NotResettable(f"the server exited with status {server.exit_code()}")
        admin.client_unpause()
        admin.client_kill_filter(_type="normal", skipme=True)
        admin.client_kill_filter(_type="pubsub", skipme=True)
        now = _config(admin)
        if now != self._config:
            for name, value in self._config.items():
                if now.get(name) != value:
                    admin.config_set(name, value)  # one at a time: Redis 6.2 takes one per call
            now = _config(admin)
            if now != self._config:
                differ = sorted(k for k in self._config.keys() | now.keys() if now.get(k) != self._config.get(k))
                raise NotResettable(f"CONFIG values not restored: {differ}")
        if _acl(admin) != self._acl:
            raise NotResettable("its ACL users changed")
        replication = admin.info("replication")
        if replication["role"] != "master" or int(replication["connected_slaves"]):
            raise NotResettable("it is, or has, a replica")
        admin.flushall()
        admin.script_flush()
        admin.config_resetstat()
        if admin.info("keyspace"):
            raise NotResettable("keys are left after FLUSHALL")

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._server is not None:
            # Throwaway data; SIGTERM could wait on what the last test left (a pause, a save).
            self._server.kill()
        self._servers.close()
        self._server = None

    def _start(self) -> None:
        self._server = self._servers.start()
        self._admin = redis_client(self._server.url, connect_timeout_s=2.0, socket_timeout_s=5.0, retries=1)
        self._config = _config(self._admin)
        self._acl = _acl(self._admin)

    def _replace(self) -> None:
        if self._admin is not None:
            self._admin.close()
        if self._server is not None:
            self._server.kill()  # its data is throwaway; a paused or busy server may ignore SIGTERM
        self.replaced += 1
        self._start()


def _config(client: redis.Redis) -> dict[str, str]:
    return {str(name): str(value) for name, value in client.config_get("*").items()}


def _acl(client: redis.Redis) -> list[str]:
    return [str(rule) for rule in client.acl_list()]


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRedis]:
    """The redis-server shared by the tests of this process (started on first use)."""
    shared = SharedRedis(tmp_path_factory.mktemp("shared-redis"))
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServers]:
    """Factory of real redis-server processes, all stopped after the test."""
    servers = RedisServers(tmp_path / "redis-servers")
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def redis_url(shared_redis: SharedRedis) -> str:
    """URL of this process's shared redis-server, reset to its starting state for this test."""
    return shared_redis.fresh_url()


def _client_of(url: str) -> Iterator[redis.Redis]:
    client = redis_client(url, socket_timeout_s=10.0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client (``decode_responses=True``) of the shared redis-server of `redis_url`."""
    yield from _client_of(redis_url)


@pytest.fixture
def own_redis_url(redis_servers: RedisServers) -> str:
    """URL of a fresh, empty redis-server for this test alone (stopped after it)."""
    return redis_servers.start().url


@pytest.fixture
def own_redis_conn(own_redis_url: str) -> Iterator[redis.Redis]:
    """A client (``decode_responses=True``) of this test's own redis-server (`own_redis_url`)."""
    yield from _client_of(own_redis_url)
