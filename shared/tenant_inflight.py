"""Per-tenant backpressure: no tenant may have more than
``OMNIBIND_BACKPRESSURE__MAX_INFLIGHT_PER_TENANT`` uploads unfinished at once.

The cpu queue is one FIFO: without a bound, a tenant that submits 20,000 uploads puts every
other tenant's uploads behind all of them. With it, a flood waits at the door (HTTP 429
``tenant_busy`` with Retry-After, `Busy` in the Python client, a pending entry on the
tenant's own bridge stream) and the queue holds at most that many of its uploads ahead of
anyone else's.

Bookkeeping: ``{prefix}:tenant_inflight:<tenant>``, a sorted set of the tenant's started
upload ids (scored by start time), added to when a run starts. Finished uploads are not
removed by the pipeline (the status script knows nothing of this); they are pruned here,
only when the set reaches the limit: one pipelined HGET of each member's status, and the
finished (or expired) ones leave. So a check costs one ZCARD, and O(limit) at the limit. The
bound is approximate under concurrent producers (two may pass the same check).
"""

from __future__ import annotations

from typing import Any

import redis

from shared.config import Settings
from shared.errors import Busy
from shared.events import UploadStatus
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

_TERMINAL = {status.value for status in UploadStatus if status.terminal}


class TenantBusy(Busy):
    """A tenant has as many uploads unfinished as it may; retry later."""

    reason = "tenant_busy"


class TenantInflight:
    def __init__(self, client: redis.Redis, prefix: str, limit: int, retry_after_s: int) -> None:
        self._redis = client
        self._keys = RedisKeys(prefix)
        self.limit = limit
        self.retry_after_s = retry_after_s

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> TenantInflight:
        bp = settings.backpressure
        return cls(client, settings.queue_prefix, bp.max_inflight_per_tenant, bp.retry_after_s)

    def key(self, tenant: str) -> str:
        return self._keys.tenant_inflight(tenant)

    def check(self, tenant: str | None) -> None:
        """Return if `tenant` may start another upload; raise `TenantBusy` if not (never
        for no tenant or no limit). Raises `RedisUnavailable`."""
        if tenant is None or self.limit <= 0:
            return
        key = self.key(tenant)
        with translate_redis_errors(f"counting the unfinished uploads of tenant {tenant}"):
            if int(self._redis.zcard(key)) < self.limit:  # type: ignore[arg-type]  # sync client
                return
            unfinished = self._prune(key)
        if unfinished >= self.limit:
            raise TenantBusy(
                f"tenant {tenant} has {unfinished} uploads unfinished (limit {self.limit}); "
                f"retry in {self.retry_after_s} s"
            )

    def started(self, tenant: str | None, upload_id: str, at_ms: int) -> None:
        """Record that a run of `upload_id` started (only counted under a limit)."""
        if tenant is None or self.limit <= 0:
            return
        with translate_redis_errors(f"recording an unfinished upload of tenant {tenant}"):
            self._redis.zadd(self.key(tenant), {upload_id: at_ms})

    def _prune(self, key: str) -> int:
        members: Any = self._redis.zrange(key, 0, -1)
        ids = [m.decode() if isinstance(m, bytes) else m for m in members]
        pipe = self._redis.pipeline(transaction=False)
        for upload_id in ids:
            pipe.hget(self._keys.upload(upload_id), "status")
        statuses = pipe.execute()
        done = [
            upload_id
            for upload_id, status in zip(ids, statuses, strict=True)
            if status is None or (status.decode() if isinstance(status, bytes) else status) in _TERMINAL
        ]
        if done:
            self._redis.zrem(key, *done)
        return len(ids) - len(done)
