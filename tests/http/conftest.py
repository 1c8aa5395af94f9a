"""Fixtures for the HTTP API tests: a real redis-server, the local object store under the
test's tmp dir, and the API served by uvicorn on loopback (no workers unless a test starts
a stack)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from producers.client import Client
from shared.config import Settings
from tests.support.api_server import ApiServer

API_KEY = "test-key-0123456789"


@dataclass
class RunningApi:
    server: ApiServer
    settings: Settings
    client: Client  # a producer client of the same stack, to look behind the API

    @property
    def url(self) -> str:
        return self.server.url

    def http(self, *, key: str | None = API_KEY, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)


def api_settings(root: Path, url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": root / "data",
        "redis_url": SecretStr(url),
        "model": {"name": "tiny", "cache_dir": root / "cache"},
        "api": {"keys": SecretStr(API_KEY)},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return Settings(**base)


@pytest.fixture
def start_api(tmp_path: Path, redis_url: str, serve_api: Any) -> Iterator[Callable[..., RunningApi]]:
    """Factory: `start_api(**settings_overrides) -> RunningApi` against this test's
    redis-server (no workers)."""
    clients: list[Client] = []

    def factory(**overrides: Any) -> RunningApi:
        settings = api_settings(tmp_path / f"api{len(clients)}", redis_url, **overrides)
        client = Client(settings, source="test")
        clients.append(client)
        return RunningApi(serve_api(settings), settings, client)

    yield factory
    for client in clients:
        client.close()
