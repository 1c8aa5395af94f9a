"""Worker liveness in Redis: `omnibind up` waits for it, `omnibind health` (container
healthchecks) and `omnibind status` read it.

Beats are stamped and judged by the Redis server's clock (``TIME``), never the host's: a
worker host whose clock is behind would otherwise stamp beats that every reader with a right
clock prunes as older than `TTL_S` at once — the worker is alive but never listed (seen with
a host 30 s behind, tests/robustness/test_clock_skew.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from shared.redis_clock import server_time

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
TTL_S = 20


def heartbeat_key(prefix: str, kind: str, host: str, pid: int) -> str:
    return f"{prefix}:workers:{kind}:{host}:{pid}"


def registry_key(prefix: str) -> str:
    """A sorted set of heartbeat keys by last beat: readers never scan the keyspace."""
    return f"{prefix}:workers"


def live_workers(client: redis.Redis, prefix: str, kind: str = "*") -> list[dict[str, object]]:
    """Heartbeats of live workers of `kind` ("*" = any). Registry entries whose key expired
    (a killed worker) are pruned on the way."""
    registry = registry_key(prefix)
    client.zremrangebyscore(registry, "-inf", server_time(client) - TTL_S)
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in client.zrange(registry, 0, -1)]
    if kind != "*":
        keys = [k for k in keys if k.startswith(f"{prefix}:workers:{kind}:")]
    if not keys:
        return []
    return [json.loads(raw) for raw in client.mget(keys) if raw]


class Heartbeat:
    """Writes this process's liveness (and whatever `details` returns, e.g. batch statistics)
    every few seconds under a key that expires if the process dies."""

    def __init__(
        self, client: redis.Redis, prefix: str, kind: str, details: Callable[[], dict[str, object]] | None = None
    ) -> None:
        self._client = client
        self._details = details
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._key = heartbeat_key(prefix, kind, self._host, self._pid)
        self._registry = registry_key(prefix)
        self._doc = {"kind": kind, "host": self._host, "pid": self._pid, "started_at": time.time()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):  # the key expires on its own anyway
            pipe = self._client.pipeline()
            pipe.delete(self._key)
            pipe.zrem(self._registry, self._key)
            pipe.execute()

    def _beat(self) -> None:
        try:
            details = self._details() if self._details else {}
            doc = {**self._doc, **details}
            now = server_time(self._client)
            pipe = self._client.pipeline()
            pipe.set(self._key, json.dumps({**doc, "beat_at": now}), ex=TTL_S)
            pipe.zadd(self._registry, {self._key: now})
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("heartbeat not written: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._beat()
