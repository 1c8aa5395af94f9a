"""Per-tenant daily quotas: uploads a day and bytes a day (``OMNIBIND_QUOTAS__*``).

Checked where uploads are accepted (`producers.client.Client`, so the HTTP API, the bridge
and the Python client alike), before anything is stored: an upload that would take its
tenant past either limit of the current UTC day is refused with `QuotaExceeded` (HTTP 429,
``Retry-After`` = seconds until the next UTC midnight). Uploads without a tenant (operator
paths) have no quota.

Counting: ``{prefix}:quota:<tenant>:<YYYY-MM-DD>`` (hash ``uploads``, ``bytes``; expires two
days later). `QuotaGate.reserve` checks and counts in one atomic step, so concurrent API
processes cannot overshoot; a submission that then starts no run (a repeat of an id in
flight) or fails is refunded (`QuotaGate.refund`). Bytes are what the producer hands over:
a file's size, an inline text's UTF-8 length, an object reference's ``size`` when it names
one (0 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from shared.config import QuotaSettings, Settings
from shared.errors import Busy
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

_KEY_TTL_S = 2 * 86400
# KEYS[1] = the day's counter; ARGV = max uploads, max bytes (0 = none), bytes to add, ttl.
# Returns {1} when counted, {0, which limit, its value} when refused.
_RESERVE_LUA = """
local uploads = tonumber(redis.call('HGET', KEYS[1], 'uploads') or '0')
local used = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local max_uploads, max_bytes, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if max_uploads > 0 and uploads + 1 > max_uploads then return {0, 'uploads', uploads} end
if max_bytes > 0 and used + size > max_bytes then return {0, 'bytes', used} end
redis.call('HINCRBY', KEYS[1], 'uploads', 1)
redis.call('HINCRBY', KEYS[1], 'bytes', size)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1}
"""


class QuotaExceeded(Busy):
    """A tenant's daily quota is used up (HTTP 429 with Retry-After)."""

    reason = "quota_exceeded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def seconds_to_next_day(now: datetime) -> int:
    """Whole seconds from `now` until the next UTC midnight (at least 1)."""
    tomorrow = (now.astimezone(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds() + 0.999))


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one accepted upload counted, to refund it if no run starts."""

    key: str
    size_bytes: int


class QuotaGate:
    """Reserves uploads against tenants' daily quotas in Redis (module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str, quotas: QuotaSettings) -> None:
        self._redis = client
        self._prefix = prefix
        self._quotas = quotas
        self._script = client.register_script(_RESERVE_LUA)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> QuotaGate:
        return cls(client, settings.queue_prefix, settings.quotas)

    def key(self, tenant: str, now: datetime) -> str:
        return RedisKeys(self._prefix).quota(tenant, now.astimezone(UTC).date().isoformat())

    def reserve(self, tenant: str | None, size_bytes: int, *, now: datetime | None = None) -> Reservation | None:
        """Count one upload of `size_bytes` for `tenant` today; None when nothing is counted
        (no tenant, or no limit). Raises `QuotaExceeded`, `RedisUnavailable`."""
        if tenant is None:
            return None
        max_uploads, max_bytes = self._quotas.for_tenant(tenant)
        if max_uploads <= 0 and max_bytes <= 0:
            return None
        now = now or datetime.now(UTC)
        key = self.key(tenant, now)
        with translate_redis_errors(f"checking the quota of tenant {tenant}"):
            reply: Any = self._script(keys=[key], args=[max_uploads, max_bytes, max(0, size_bytes), _KEY_TTL_S])
        if int(reply[0]) == 1:
            return Reservation(key, max(0, size_bytes))
        which = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        limit = max_uploads if which == "uploads" else max_bytes
        wait_s = seconds_to_next_day(now)
        raise QuotaExceeded(
            f"tenant {tenant} has used its daily quota of {limit} {which} "
            f"({int(reply[2])} so far today, UTC); retry in {wait_s} s",
            retry_after_s=wait_s,
        )

    def refund(self, reservation: Reservation | None) -> None:
        """Give back what `reservation` counted (its submission started no run)."""
        if reservation is None:
            return
        with translate_redis_errors("refunding a quota reservation"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hincrby(reservation.key, "uploads", -1)
            pipe.hincrby(reservation.key, "bytes", -reservation.size_bytes)
            pipe.execute()

    def usage(self, tenant: str, *, now: datetime | None = None) -> tuple[int, int]:
        """(uploads, bytes) counted for `tenant` today."""
        with translate_redis_errors(f"reading the quota of tenant {tenant}"):
            raw: Any = self._redis.hgetall(self.key(tenant, now or datetime.now(UTC)))
        fields = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        return fields.get("uploads", 0), fields.get("bytes", 0)
