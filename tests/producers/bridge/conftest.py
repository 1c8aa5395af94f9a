"""Bridge tests run against a real redis-server; nothing consumes the Celery queues, so what
the bridge enqueued can be read back from them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from producers.client import Client
from shared.config import Settings


@pytest.fixture
def bridge_settings(make_settings: Callable[..., Settings], redis_url: str) -> Callable[..., Settings]:
    """`bridge_settings(**bridge_overrides)`: settings on this test's redis-server with short
    waits (reads block 0.2 s, stale entries are taken over after 0.5 s)."""

    def factory(**bridge: Any) -> Settings:
        return make_settings(redis_url=redis_url, bridge={"block_s": 0.2, "reclaim_idle_s": 0.5, **bridge})

    return factory


@pytest.fixture
def client(bridge_settings: Callable[..., Settings]) -> Iterator[Client]:
    with Client(bridge_settings(), source="test") as producer:
        yield producer


def queued_tasks(conn: redis.Redis, queue: str, prefix: str = "omnibind") -> list[tuple[str, str]]:
    """(task name, argsrepr) of every message waiting on a Celery queue, oldest first."""
    raw: Any = conn.lrange(f"{prefix}:{queue}", 0, -1)
    headers = [json.loads(message)["headers"] for message in reversed(raw)]  # LPUSHed: newest first
    return [(h["task"], h["argsrepr"]) for h in headers]
