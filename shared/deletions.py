"""Pending deletions: each deletion of an upload's record is recorded in Redis before its
message is sent, and forgotten only once it is done (or dead-lettered).

A delete message can be lost like an upload's (a worker that pops it and dies, or cannot
record it as held because Redis refuses writes, before it is acknowledged); its record lets
the stall sweeper (`workers.sweeper`) send it again. A deletion is named by a token derived
from the request itself, so the same request recorded twice (a bridge that re-reads an
event) is one pending deletion. Keys (`shared.redis_keys`): ``{prefix}:deletions`` (token ->
request JSON), ``{prefix}:deletions:inflight`` (token scored by its last progress, epoch
ms) and ``{prefix}:deletions:deliveries:{token}`` (the deliveries of its messages, per retry
count, so that a delete that kills its worker every time is dead-lettered after
``max_deliveries``).

Deliveries are counted per retry count because a delete waiting for its upload's run retries
many times, and a worker killed between publishing a retry and acknowledging its message
leaves two copies retrying side by side: counted together, their deliveries outran their
retries and a deletion no worker ever crashed on was dead-lettered as ``poison_message``
(3 of 200 in a chaos run). A message that kills its worker comes back with the same retry
count every time, so crashes are the deliveries at one count, less one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from shared.config import Settings
from shared.events import DeleteRequest
from shared.queue import SENT_MS_HEADER, QueueName, TaskName
from shared.redis_client import RedisUnavailable, translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.redis_replies import reply_text

DELIVERIES_TTL_S = 7 * 86400  # a deletion settles within its retry budget; this only bounds a leak

# The header naming the pending deletion a delete message carries (`send_delete`), so that
# the sweeper can tell a held deletion from a lost one.
DELETION_HEADER = "omnibind_deletion"

# KEYS: 1 dead-letter stream, 2 pending hash, 3 in-flight zset, 4 the token's deliveries. ARGV: 1 token
# ('' = none), 2 dead-letter maxlen, 3.. dead-letter field/value pairs (none: only forget). The
# dead letter goes first: when Redis refuses writes (OOM under noeviction) nothing is changed.
_FINISH_LUA = """
if #ARGV > 2 then redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3)) end
if ARGV[1] ~= '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4])
end
return 1
"""


def deletion_token(request: DeleteRequest) -> str:
    """The token of `request`: its upload id and a digest of the whole request (pure)."""
    digest = hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:16]
    return f"{request.upload_id}/{digest}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class PendingDeletions:
    """Records, lists and forgets pending deletions. Raises `RedisUnavailable` when Redis is
    unreachable or refuses the write."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, dead_maxlen: int = 100_000) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self.dead_maxlen = dead_maxlen
        self._finish = client.register_script(_FINISH_LUA)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> PendingDeletions:
        return cls(client, settings.queue_prefix, dead_maxlen=settings.redis.dead_maxlen)

    def record(self, request: DeleteRequest) -> str:
        """Note `request` as pending (before its message is sent) and return its token."""
        token = deletion_token(request)
        with translate_redis_errors(f"recording the deletion of upload {request.upload_id}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self.keys.deletions, token, request.model_dump_json())
            pipe.zadd(self.keys.deletions_inflight, {token: _now_ms()})
            pipe.execute()
        return token

    def touch(self, token: str) -> bool:
        """Note progress of a pending deletion (about to be retried). False when not pending."""
        with translate_redis_errors("noting progress of a deletion"):
            return bool(self._redis.zadd(self.keys.deletions_inflight, {token: _now_ms()}, xx=True, ch=True))

    def done(self, token: str | None, dead_letter: Mapping[str, str] | None = None) -> None:
        """Forget a finished deletion (None: a message that names none); with `dead_letter`
        (`shared.streams.dead_letter_fields`) write its dead letter in the same step. On
        `RedisUnavailable` nothing was written."""
        args: list[str | int] = [token or "", self.dead_maxlen]
        for name, value in (dead_letter or {}).items():
            args += [name, value]
        keys = [
            self.keys.dead,
            self.keys.deletions,
            self.keys.deletions_inflight,
            self.keys.deletion_deliveries(token or ""),
        ]
        with translate_redis_errors("recording the end of a deletion"):
            self._finish(keys=keys, args=args)

    def count_delivery(self, token: str, retries: int = 0) -> int:
        """Record one more delivery of a delete message of `token` that was retried `retries`
        times; returns how many messages with that retry count were delivered, this one
        included. Redis keeps no delivery count, so a delete that kills its worker every time
        is found by this one (``workers.tasks.index``); the counts are forgotten with the
        deletion (`done`), or after `DELIVERIES_TTL_S`."""
        key = self.keys.deletion_deliveries(token)
        with translate_redis_errors("counting deliveries of a deletion"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hincrby(key, str(retries), 1)
            pipe.expire(key, DELIVERIES_TTL_S)
            count, _ = pipe.execute()
        return int(count)

    def get(self, token: str) -> DeleteRequest | None:
        with translate_redis_errors("reading a pending deletion"):
            raw: Any = self._redis.hget(self.keys.deletions, token)
        return DeleteRequest.model_validate_json(raw) if raw else None

    def stalled(self, idle_s: float, *, limit: int = 500) -> list[tuple[str, int]]:
        """Up to `limit` pending deletions without progress for `idle_s`, oldest first, each
        with its last progress (epoch ms)."""
        cutoff = _now_ms() - int(idle_s * 1000)
        with translate_redis_errors("listing stalled deletions"):
            rows: Any = self._redis.zrangebyscore(
                self.keys.deletions_inflight, "-inf", cutoff, start=0, num=limit, withscores=True
            )
        return [(reply_text(member), int(score)) for member, score in rows]

    def count(self) -> int:
        with translate_redis_errors("counting pending deletions"):
            return int(self._redis.zcard(self.keys.deletions_inflight))  # type: ignore[arg-type]


def deletion_headers(token: str) -> dict[str, Any]:
    """The headers of a delete message: its deletion token and when it is sent (epoch ms)."""
    return {DELETION_HEADER: token, SENT_MS_HEADER: _now_ms()}


def send_delete(celery: Celery, request: DeleteRequest, token: str) -> None:
    """Send the delete task of a recorded deletion to the index queue. Raises
    `RedisUnavailable` when the broker does not take it."""
    try:
        celery.send_task(
            TaskName.DELETE,
            args=[request.model_dump(mode="json")],
            queue=QueueName.INDEX,
            ignore_result=True,  # fire and forget: no result-channel SUBSCRIBE per message
            argsrepr=f"<delete {request.upload_id}>",
            kwargsrepr="{}",
            headers=deletion_headers(token),
        )
    except OperationalError as exc:
        raise RedisUnavailable(f"cannot send the deletion of upload {request.upload_id}: {exc}") from exc
