"""One consumer of a Redis stream consumer group: read new entries, re-read its own pending
ones, take over entries a dead consumer left pending, acknowledge.

Used by the ingest bridge (``{prefix}:ingest``) and the webhook dispatcher
(``{prefix}:results``). Works with clients that decode replies and with ones that do not
(entry ids are returned as text either way; fields as the client gives them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from shared.redis_client import translate_redis_errors

Fields = Mapping[Any, Any]
Entry = tuple[str, Fields | None]  # fields None: the entry was trimmed from the stream meanwhile
_CURSOR_START = "0-0"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def _entries(raw: Any) -> list[Entry]:
    return [(_text(entry_id), fields or None) for entry_id, fields in raw or []]


@dataclass
class StreamGroup:
    client: redis.Redis
    key: str
    group: str
    consumer: str

    def ensure(self, start_id: str = "0") -> None:
        """Create the group (and the stream) if missing: ``0`` = from the oldest retained
        entry, ``$`` = only entries added from now on."""
        with translate_redis_errors(f"creating consumer group {self.group} on {self.key}"):
            try:
                self.client.xgroup_create(self.key, self.group, id=start_id, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_new(self, count: int, block_ms: int | None) -> list[Entry]:
        """Entries never delivered to the group, waiting up to `block_ms` for the first."""
        return self._read(">", count, block_ms)

    def read_own_pending(self, count: int) -> list[Entry]:
        """Entries delivered to this consumer before and not acknowledged (after a crash or a
        failed attempt), oldest first."""
        return self._read("0", count, None)

    def claim_stale(self, min_idle_ms: int, cursor: str, count: int) -> tuple[str, list[Entry]]:
        """Take over up to `count` entries pending for at least `min_idle_ms` on any consumer
        (XAUTOCLAIM), scanning from `cursor`; returns the next cursor (``0-0`` once the
        whole pending list was scanned) and the entries."""
        with translate_redis_errors(f"claiming stale entries of {self.key}"):
            reply: Any = self.client.xautoclaim(
                self.key, self.group, self.consumer, min_idle_ms, start_id=cursor, count=count
            )
        return _text(reply[0]), _entries(reply[1])

    def ack(self, *entry_ids: str) -> None:
        if entry_ids:
            with translate_redis_errors(f"acknowledging entries of {self.key}"):
                self.client.xack(self.key, self.group, *entry_ids)

    def trim_handled(self) -> None:
        """Remove the entries that every consumer group of the stream has read and
        acknowledged (XTRIM MINID): the stream stays short, and no group, ours or another
        program's, loses an entry it has not handled yet."""
        with translate_redis_errors(f"trimming {self.key}"):
            groups: Any = self.client.xinfo_groups(self.key)
            keep_from: list[str] = []
            for group in groups:
                summary: Any = self.client.xpending(self.key, group["name"])
                oldest_needed = summary["min"] if summary["pending"] else group["last-delivered-id"]
                keep_from.append(_text(oldest_needed))
            if keep_from:
                # Exact, not "~": approximate trimming only drops whole 100-entry nodes.
                self.client.xtrim(self.key, minid=min(keep_from, key=_id_order), approximate=False)

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Entry]:
        with translate_redis_errors(f"reading {self.key} for group {self.group}"):
            reply: Any = self.client.xreadgroup(
                self.group, self.consumer, {self.key: start}, count=count, block=block_ms
            )
        if not reply:
            return []
        per_stream = reply.values() if isinstance(reply, dict) else (entries for _key, entries in reply)
        return [entry for entries in per_stream for entry in _entries(entries)]


class ClaimSchedule:
    """When to scan the pending list for stale entries: a full XAUTOCLAIM pass every
    `interval_s`, continued across calls while a pass is incomplete."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.cursor = _CURSOR_START
        self._next_pass_s = 0.0

    def due(self, now_s: float) -> bool:
        return self.cursor != _CURSOR_START or now_s >= self._next_pass_s

    def advance(self, cursor: str, now_s: float) -> None:
        self.cursor = cursor
        if cursor == _CURSOR_START:
            self._next_pass_s = now_s + self.interval_s
