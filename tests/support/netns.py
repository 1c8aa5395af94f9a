"""Simulated hosts for multi-host tests: Linux network namespaces joined by veth pairs.

The test process's own namespace is the "store host": it holds a bridge with the private
address ``10.213.N.1/24`` (N from the pid, so concurrent runs don't collide), where Redis
listens and the embedded stores' files live. Each worker host is a namespace
(``ip netns add``) whose ``eth0`` (``10.213.N.(10+i)``) is one end of a veth pair; the other
end is attached to the bridge. `Network.partition` takes a host's link down (its packets are
dropped, its TCP connections hang as across a real partition) and `Network.heal` brings it
back. Everything is removed by `Network.close`. Every address is inside this machine.

Needs CAP_NET_ADMIN (root, or a user namespace that grants it). `netns_problem` says why
namespaces cannot be made here; tests skip with that reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _ip(*args: str, namespace: str | None = None) -> None:
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def netns_problem() -> str | None:
    """Why test hosts cannot be made on this machine (no iproute2, no permission), or None."""
    probe = f"omnibind-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except FileNotFoundError:
        return "iproute2's `ip` is not installed"
    except RuntimeError as exc:
        return f"`ip netns add` is not permitted here ({exc})"
    try:
        _ip("link", "set", "lo", "up", namespace=probe)
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    address: str
    link: str  # the bridge-side end of its veth pair (in the store host's namespace)

    @property
    def wrapper(self) -> tuple[str, ...]:
        """Prefix of a command line that runs it on this host."""
        return ("ip", "netns", "exec", self.name)


class Network:
    """A bridge in this namespace (the store host) and worker hosts attached to it."""

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.subnet = f"10.213.{20 + os.getpid() % 200}"
        self.bridge = f"obr{tag}"
        self.gateway = f"{self.subnet}.1"  # the store host's address, seen from every host
        self.hosts: list[Host] = []
        self._tag = tag

    def create(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str) -> Host:
        index = len(self.hosts)
        namespace = f"omnibind-{name}-{self._tag}"
        link = f"ov{self._tag}h{index}"
        address = f"{self.subnet}.{10 + index}"
        _ip("netns", "add", namespace)
        host = Host(namespace, address, link)
        self.hosts.append(host)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", link, "master", self.bridge)
        _ip("link", "set", link, "up")
        _ip("link", "set", "lo", "up", namespace=namespace)
        _ip("addr", "add", f"{address}/24", "dev", "eth0", namespace=namespace)
        _ip("link", "set", "eth0", "up", namespace=namespace)
        return host

    def partition(self, host: Host) -> None:
        """Cut `host` off: its link goes down, packets both ways are dropped."""
        _ip("link", "set", host.link, "down")

    def heal(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def close(self) -> None:
        for host in self.hosts:  # deleting a namespace deletes its veth pair
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        self.hosts.clear()


@pytest.fixture
def simulated_network() -> Iterator[Network]:
    """A `Network` (skipped, with the reason, where namespaces cannot be made)."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"multi-host test needs network namespaces: {problem}")
    network = Network()
    try:
        yield network.create()
    finally:
        network.close()


def start_redis_on(address: str, directory: Path, port: int) -> subprocess.Popen[bytes]:
    """A redis-server (the bundled binary, the embedded server's durability settings)
    listening on `address` and loopback."""
    from producers.embedded_redis import find_redis_server
    from producers.processes import die_with_parent

    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                f"bind {address} 127.0.0.1",
                "protected-mode no",
                f"port {port}",
                f'dir "{directory}"',
                f'logfile "{directory / "redis.log"}"',
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "maxmemory-policy noeviction",
                # A partitioned host's connections are closed by keepalive, not kept for ever.
                "tcp-keepalive 10",
            ]
        )
        + "\n"
    )
    return subprocess.Popen(
        [str(find_redis_server()), str(conf)],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
