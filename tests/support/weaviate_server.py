"""A real Weaviate server (built from its Go module by `make servers`) on loopback.

Configured as docker-compose runs it: API-key authentication (anonymous access off), no
vectorizer modules, gRPC on, persistence in a temporary data dir, telemetry off (this
machine reaches no outside host). Every port (HTTP, gRPC, gossip, data, Raft) is a free
loopback port picked at construction, so several servers can run at once and one can be
killed and started again at the same address.

``weaviate_server`` (session) is shared; tests keep apart with collections of their own.
``WEAVIATE_URL`` (with ``WEAVIATE_GRPC_PORT``, ``WEAVIATE_API_KEY``) points the tests at an
external server instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.support.live import ServerProcess, require_binary
from tests.support.s3_server import HOST, free_loopback_port
from tools.servers import WEAVIATE

API_KEY = "omnibind-weaviate-test-key-5f2c"


@dataclass(frozen=True)
class WeaviateAddress:
    """Where a Weaviate listens and the key it takes."""

    url: str
    grpc_port: int
    api_key: str | None

    def vector_settings(self, **overrides: Any) -> dict[str, Any]:
        """The ``vectors`` settings group for this server (pass to `Settings(vectors=...)`)."""
        return {
            "backend": "weaviate",
            "url": self.url,
            "grpc_port": self.grpc_port,
            "api_key": SecretStr(self.api_key) if self.api_key else None,
            **overrides,
        }

    def env(self) -> dict[str, str]:
        """``OMNIBIND_VECTORS__*`` variables that point a subprocess at this server."""
        env = {
            "OMNIBIND_VECTORS__BACKEND": "weaviate",
            "OMNIBIND_VECTORS__URL": self.url,
            "OMNIBIND_VECTORS__GRPC_PORT": str(self.grpc_port),
        }
        if self.api_key:
            env["OMNIBIND_VECTORS__API_KEY"] = self.api_key
        return env


class WeaviateServer:
    """One Weaviate process with its data dir; `start`/`stop`/`kill` keep the address."""

    def __init__(self, base_dir: Path, *, api_key: str = API_KEY) -> None:
        binary = require_binary(WEAVIATE)
        self.port = free_loopback_port()
        self.grpc_port = free_loopback_port()
        self.api_key = api_key
        gossip, data, raft, raft_rpc = (free_loopback_port() for _ in range(4))
        env = {
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
            "AUTHENTICATION_APIKEY_ENABLED": "true",
            "AUTHENTICATION_APIKEY_ALLOWED_KEYS": api_key,
            "AUTHENTICATION_APIKEY_USERS": "omnibind",
            "AUTHORIZATION_ADMINLIST_ENABLED": "true",
            "AUTHORIZATION_ADMINLIST_USERS": "omnibind",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "ENABLE_MODULES": "",
            "PERSISTENCE_DATA_PATH": str(base_dir / "data"),
            "DISABLE_TELEMETRY": "true",
            "PROMETHEUS_MONITORING_ENABLED": "false",
            "GRPC_PORT": str(self.grpc_port),
            "CLUSTER_HOSTNAME": "node1",
            "CLUSTER_BIND_ADDR": HOST,
            "CLUSTER_ADVERTISE_ADDR": HOST,
            "CLUSTER_GOSSIP_BIND_PORT": str(gossip),
            "CLUSTER_DATA_BIND_PORT": str(data),
            "RAFT_PORT": str(raft),
            "RAFT_INTERNAL_RPC_PORT": str(raft_rpc),
            "RAFT_JOIN": f"node1:{raft}",
            "RAFT_BOOTSTRAP_EXPECT": "1",
            "LOG_LEVEL": "warning",
            "GOMAXPROCS": "2",
        }
        command = [str(binary), "--host", HOST, "--port", str(self.port), "--scheme", "http"]
        self.process = ServerProcess(
            "weaviate", command, env, f"http://{HOST}:{self.port}/v1/.well-known/ready", base_dir / "logs"
        )

    @property
    def address(self) -> WeaviateAddress:
        return WeaviateAddress(f"http://{HOST}:{self.port}", self.grpc_port, self.api_key)

    def start(self) -> WeaviateServer:
        self.process.start()
        return self

    def stop(self, *, kill: bool = False) -> None:
        self.process.stop(kill=kill)


def external_weaviate() -> WeaviateAddress | None:
    """The server named by ``WEAVIATE_URL``, if any."""
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        return None
    return WeaviateAddress(url, int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")), os.environ.get("WEAVIATE_API_KEY"))


@pytest.fixture(scope="session")
def weaviate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeaviateAddress]:
    """A live Weaviate for the whole session: ``WEAVIATE_URL``'s, or one started here."""
    external = external_weaviate()
    if external is not None:
        yield external
        return
    server = WeaviateServer(tmp_path_factory.mktemp("weaviate")).start()
    try:
        yield server.address
    finally:
        server.stop()


@pytest.fixture
def make_weaviate_server(tmp_path: Path) -> Iterator[Any]:
    """`make_weaviate_server(**options) -> WeaviateServer` (started); all stopped after the test."""
    servers: list[WeaviateServer] = []

    def factory(**options: Any) -> WeaviateServer:
        server = WeaviateServer(tmp_path / f"weaviate-{len(servers)}", **options)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
