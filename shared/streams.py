"""The Redis streams omnibind publishes, and per-upload delivery counters.

* ``{prefix}:results`` — one entry per finished upload run, written only by the status
  script (`shared.status`); `ResultStream` reads it with XREAD or a consumer group.
* ``{prefix}:dead`` — messages that failed for good (a permanent error, retries used up,
  or a poison message); `DeadLetterStream` adds, lists and deletes entries.
* ``{prefix}:deliveries:{id}`` — how often each stage's message of one upload was
  delivered. Redis (as a Celery broker) keeps no delivery count, so a message that kills
  its worker every time would be redelivered forever; `DeliveryCounter` lets a task count
  its own deliveries and dead-letter itself after N.

Entry formats for non-Python consumers: docs/redis.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import redis
from pydantic import Field

from shared.config import Settings
from shared.errors import PermanentError
from shared.events import Frozen, Result, Stage, utcnow
from shared.json_limits import loads_bounded
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.redis_replies import reply_text

DEAD_LETTER_VERSION = "1"
MAX_MESSAGE_CHARS = 4000


def _decode(fields: Mapping[str | bytes, str | bytes]) -> dict[str, str]:
    return {reply_text(k): reply_text(v) for k, v in fields.items()}


def _stream_entries(reply: Any) -> list[tuple[Any, Any]]:
    """The (id, fields) pairs of an XREAD/XREADGROUP reply of one stream, whatever the reply
    shape (RESP2 list of [stream, entries], RESP3 dict stream -> entries)."""
    if not reply:
        return []
    per_stream = reply.values() if isinstance(reply, dict) else (entries for _stream, entries in reply)
    return [(entry_id, fields) for entries in per_stream for entry_id, fields in entries]


# -- results ---------------------------------------------------------------------------------


class ResultEntry(Frozen):
    """One results-stream entry: its stream id, the run of the upload it closes, the result."""

    entry_id: str
    run: int = 1
    result: Result
    # None: an upload's end (type upload.<status>); "moderation.decided": a human review of
    # an indexed upload (`shared.moderation.review`), whose decision is in `review`.
    event_type: str | None = None
    review: dict[str, Any] | None = None


def parse_result_entry(entry_id: str | bytes, fields: Mapping[str | bytes, str | bytes]) -> ResultEntry:
    """Parse one results-stream entry (its ``result`` JSON document is authoritative)."""
    decoded = _decode(fields)
    return ResultEntry(
        entry_id=reply_text(entry_id),
        run=int(decoded.get("run", "1")),
        result=Result.model_validate_json(decoded["result"]),
        event_type=decoded.get("type"),
        review=json.loads(decoded["review"]) if "review" in decoded else None,
    )


class ResultStream:
    """Reader of ``{prefix}:results``: plain reads from a position, or consumer groups
    (each entry delivered to one consumer of a group; unacknowledged ones stay pending)."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind") -> None:
        self._redis = client
        self.key = RedisKeys(prefix).results

    def last_id(self) -> str:
        """Id of the newest entry, or ``0-0`` when the stream is empty: read after it to
        see only what comes next."""
        with translate_redis_errors("reading the results stream"):
            newest: Any = self._redis.xrevrange(self.key, count=1)
        return reply_text(newest[0][0]) if newest else "0-0"

    def read(self, after_id: str = "0-0", *, count: int = 100, block_ms: int | None = None) -> list[ResultEntry]:
        """Up to `count` entries after `after_id` (oldest first), waiting up to `block_ms`
        for the first one when `block_ms` is given. Empty list on timeout."""
        with translate_redis_errors("reading the results stream"):
            reply: Any = self._redis.xread({self.key: after_id}, count=count, block=block_ms)
        return [parse_result_entry(eid, fields) for eid, fields in _stream_entries(reply)]

    def ensure_group(self, group: str, *, start_id: str = "0") -> None:
        """Create consumer group `group` (and the stream) if missing. `start_id` ``0`` =
        deliver the whole retained history, ``$`` = only new entries."""
        with translate_redis_errors(f"creating consumer group {group}"):
            try:
                self._redis.xgroup_create(self.key, group, id=start_id, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_group(
        self,
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_ms: int | None = None,
        pending: bool = False,
    ) -> list[ResultEntry]:
        """Entries for `consumer` of `group`: new ones, or (``pending=True``) those
        delivered to it before but not acknowledged (after a crash). Acknowledge each
        with `ack` once handled. Pending entries trimmed from the stream meanwhile are
        acknowledged here and not returned."""
        with translate_redis_errors(f"reading results for group {group}"):
            reply: Any = self._redis.xreadgroup(
                group, consumer, {self.key: "0" if pending else ">"}, count=count, block=block_ms
            )
        entries = _stream_entries(reply)
        # A pending entry already trimmed from the stream comes back without fields: it can
        # never be handled, so acknowledge it instead of returning it.
        trimmed = [reply_text(eid) for eid, fields in entries if not fields]
        if trimmed:
            self.ack(group, *trimmed)
        return [parse_result_entry(eid, fields) for eid, fields in entries if fields]

    def ack(self, group: str, *entry_ids: str) -> int:
        """Acknowledge entries for `group`; returns how many were pending."""
        if not entry_ids:
            return 0
        with translate_redis_errors(f"acknowledging results for group {group}"):
            return int(self._redis.xack(self.key, group, *entry_ids))


# -- dead letters ----------------------------------------------------------------------------


class DeadLetter(Frozen):
    """A message that failed for good, as stored on ``{prefix}:dead``."""

    entry_id: str
    upload_id: str | None = None
    stage: str
    error_class: str
    reason: str
    message: str
    attempts: int = Field(ge=0)
    event: str = Field(description="the original message body (JSON text), to retry it as it was")
    at: datetime


def parse_dead_letter(entry_id: str | bytes, fields: Mapping[str | bytes, str | bytes]) -> DeadLetter:
    decoded = _decode(fields)
    return DeadLetter(
        entry_id=reply_text(entry_id),
        upload_id=decoded.get("upload_id") or None,
        stage=decoded["stage"],
        error_class=decoded["error_class"],
        reason=decoded["reason"],
        message=decoded.get("message", ""),
        attempts=int(decoded.get("attempts", "0")),
        event=decoded.get("event", ""),
        at=decoded["at"],  # type: ignore[arg-type]  # pydantic parses the ISO string
    )


def _upload_id_of(event_json: str) -> str | None:
    """The ``id`` of an event, if it is a JSON object that has one (dead letters may hold
    an event that is not even valid JSON)."""
    try:
        data: Any = loads_bounded(event_json, max_bytes=None, what="dead letter event")
    except PermanentError:  # not JSON, or nested too deeply to parse safely
        return None
    upload_id = data.get("id") if isinstance(data, dict) else None
    return upload_id if isinstance(upload_id, str) else None


def dead_letter_fields(
    event_json: str,
    stage: Stage | str,
    error_class: str,
    reason: str,
    message: str,
    attempts: int,
    *,
    upload_id: str | None = None,
) -> dict[str, str]:
    """The fields of one dead-letter entry (docs/redis.md). `upload_id` defaults to the
    event's ``id``; `message` is cut to `MAX_MESSAGE_CHARS`."""
    return {
        "v": DEAD_LETTER_VERSION,
        "upload_id": upload_id or _upload_id_of(event_json) or "",
        "stage": Stage(stage).value if isinstance(stage, Stage) else stage,
        "error_class": error_class,
        "reason": reason,
        "message": message[:MAX_MESSAGE_CHARS],
        "attempts": str(attempts),
        "event": event_json,
        "at": utcnow().isoformat().replace("+00:00", "Z"),
    }


class DeadLetterStream:
    """``{prefix}:dead``: add, list, read and delete dead letters (capped at ~`maxlen`)."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, maxlen: int = 50_000) -> None:
        self._redis = client
        self.key = RedisKeys(prefix).dead
        self.maxlen = maxlen

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> DeadLetterStream:
        return cls(client, settings.queue_prefix, maxlen=settings.redis.dead_maxlen)

    def dead_letter(
        self,
        event_json: str,
        stage: Stage | str,
        error_class: str,
        reason: str,
        message: str,
        attempts: int,
        *,
        upload_id: str | None = None,
    ) -> str:
        """Append a dead letter and return its entry id (`dead_letter_fields` describes the
        arguments). A failed upload's dead letter is written by `StatusStore.fail` instead,
        in the same step as the failure."""
        fields = dead_letter_fields(event_json, stage, error_class, reason, message, attempts, upload_id=upload_id)
        with translate_redis_errors("writing a dead letter"):
            entry_id = self._redis.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return reply_text(entry_id)

    def entries(self, count: int = 100, *, start: str = "-", newest_first: bool = False) -> list[DeadLetter]:
        """Up to `count` dead letters from `start` (an entry id, inclusive), oldest first,
        or from the newest backwards with `newest_first`."""
        with translate_redis_errors("listing dead letters"):
            if newest_first:
                raw: Any = self._redis.xrevrange(self.key, max="+" if start == "-" else start, count=count)
            else:
                raw = self._redis.xrange(self.key, min=start, count=count)
        return [parse_dead_letter(eid, fields) for eid, fields in raw]

    def get(self, entry_id: str) -> DeadLetter | None:
        with translate_redis_errors("reading a dead letter"):
            raw: Any = self._redis.xrange(self.key, min=entry_id, max=entry_id, count=1)
        return parse_dead_letter(*raw[0]) if raw else None

    def delete(self, entry_id: str) -> bool:
        """Remove one dead letter (after a successful retry); False if it was not there."""
        with translate_redis_errors("deleting a dead letter"):
            return bool(self._redis.xdel(self.key, entry_id))

    def length(self) -> int:
        with translate_redis_errors("counting dead letters"):
            return int(self._redis.xlen(self.key))


# -- delivery counters -----------------------------------------------------------------------


class DeliveryCounter:
    """Counts deliveries of each stage's message per upload, for poison-message detection.

    A task calls `count_delivery` first thing; when the count exceeds the configured
    maximum it dead-letters the message instead of running it again. Counters expire after
    `ttl_s` (longer than every redelivery can take) and are removed when the upload
    finishes (by the status script) or by `reset_deliveries`.
    """

    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, ttl_s: float = 86400.0) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self.ttl_s = max(1, int(ttl_s))

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> DeliveryCounter:
        return cls(client, settings.queue_prefix, ttl_s=settings.redis.delivery_ttl_s)

    def count_delivery(self, upload_id: str, stage: Stage | str) -> int:
        """Record one more delivery of `stage`'s message for `upload_id`; returns the count
        including this one (1 on the first delivery)."""
        key = self.keys.deliveries(upload_id)
        with translate_redis_errors(f"counting deliveries of upload {upload_id}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hincrby(key, str(stage), 1)
            pipe.expire(key, self.ttl_s)
            count, _ = pipe.execute()
        return int(count)

    def deliveries(self, upload_id: str, stage: Stage | str) -> int:
        """The current count (0 when none), without adding one."""
        with translate_redis_errors(f"reading deliveries of upload {upload_id}"):
            value: Any = self._redis.hget(self.keys.deliveries(upload_id), str(stage))
        return int(value) if value is not None else 0

    def forget(self, upload_id: str, fields: Iterable[str]) -> None:
        """Forget the counts named `fields` (stages, or other counters kept in the hash)."""
        names = list(fields)
        if not names:
            return
        with translate_redis_errors(f"resetting deliveries of upload {upload_id}"):
            self._redis.hdel(self.keys.deliveries(upload_id), *names)

    def reset_deliveries(self, upload_id: str, stage: Stage | str | None = None) -> None:
        """Forget the count of `stage` (all stages when None), e.g. before a manual retry."""
        key = self.keys.deliveries(upload_id)
        with translate_redis_errors(f"resetting deliveries of upload {upload_id}"):
            if stage is None:
                self._redis.delete(key)
            else:
                self._redis.hdel(key, str(stage))
