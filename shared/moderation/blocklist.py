"""The example-based blocklist: known-bad files (any modality) that operators list with
``omnibind blocklist add FILE --category C``.

An entry keeps the file's SHA-256 and, unless added with ``--exact-only``, its embedding
(with the checkpoint that made it). An upload matches an entry when its bytes have the
same SHA-256 (no model involved), or when its embedding — made by the same checkpoint — is
within the policy's ``blocklist.max_distance`` cosine distance of the entry's.

Storage (Redis): ``{prefix}:blocklist:entries`` (id -> entry JSON), ``...:vectors`` (id ->
base64 float32), ``...:sha256`` (sha -> id), ``...:version`` (bumped by every change; each
process reloads its `BlocklistIndex` when it sees a new version). An entry's id is derived
from its SHA-256, so adding the same file twice updates one entry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from shared.audit import UNKNOWN_ACTOR, Action, AuditLog, AuditSink
from shared.moderation.blocklist_index import (
    ENTRY_ID_PREFIX,
    BlocklistEntry,
    BlocklistIndex,
    BlocklistMatch,
    entry_id_for,
)
from shared.moderation.vectors import decode_vector, encode_vectors
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

__all__ = [
    "ENTRY_ID_PREFIX",
    "Blocklist",
    "BlocklistCache",
    "BlocklistEntry",
    "BlocklistIndex",
    "BlocklistMatch",
    "entry_id_for",
]


class Blocklist:
    """The blocklist in Redis. Raises `RedisUnavailable` when Redis is down."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, audit: AuditSink | None = None) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self._audit = audit or AuditLog(client, prefix)

    def add(
        self, entry: BlocklistEntry, vector: np.ndarray | None = None, *, actor: str = UNKNOWN_ACTOR
    ) -> BlocklistEntry:
        """Store `entry` (and its embedding), replacing an entry of the same id; audited as
        `actor`'s."""
        keys = self.keys
        with translate_redis_errors("adding a blocklist entry"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(keys.blocklist_entries, entry.id, entry.model_dump_json())
            pipe.hset(keys.blocklist_sha256, _sha_field(entry), entry.id)
            if vector is not None:
                pipe.hset(keys.blocklist_vectors, entry.id, _encode_vector(vector))
            else:
                pipe.hdel(keys.blocklist_vectors, entry.id)
            pipe.incr(keys.blocklist_version)
            pipe.execute()
        detail = {"category": entry.category, "sha256": entry.sha256, "filename": entry.filename, "note": entry.note}
        self._audit.record(Action.BLOCKLIST_ADD, actor=actor, target=entry.id, tenant=entry.tenant, detail=detail)
        return entry

    def remove(self, entry_id: str, *, actor: str = UNKNOWN_ACTOR) -> bool:
        """Delete one entry (audited as `actor`'s); False when there was none."""
        entry = self.get(entry_id)
        if entry is None:
            return False
        keys = self.keys
        with translate_redis_errors("removing a blocklist entry"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(keys.blocklist_entries, entry_id)
            pipe.hdel(keys.blocklist_vectors, entry_id)
            pipe.hdel(keys.blocklist_sha256, _sha_field(entry))
            pipe.incr(keys.blocklist_version)
            pipe.execute()
        detail = {"category": entry.category, "sha256": entry.sha256}
        self._audit.record(Action.BLOCKLIST_REMOVE, actor=actor, target=entry_id, tenant=entry.tenant, detail=detail)
        return True

    def get(self, entry_id: str) -> BlocklistEntry | None:
        with translate_redis_errors("reading a blocklist entry"):
            raw: Any = self._redis.hget(self.keys.blocklist_entries, entry_id)
        return BlocklistEntry.model_validate_json(raw) if raw else None

    def entries(self) -> list[BlocklistEntry]:
        """Every entry, oldest first."""
        with translate_redis_errors("listing the blocklist"):
            raw: Any = self._redis.hvals(self.keys.blocklist_entries)
        return sorted((BlocklistEntry.model_validate_json(doc) for doc in raw), key=lambda e: e.added_at)

    def version(self) -> int:
        with translate_redis_errors("reading the blocklist version"):
            raw: Any = self._redis.get(self.keys.blocklist_version)
        return int(raw or 0)

    def snapshot(self) -> tuple[int, BlocklistIndex]:
        """(version, index) read in one transaction."""
        keys = self.keys
        with translate_redis_errors("reading the blocklist"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(keys.blocklist_version)
            pipe.hvals(keys.blocklist_entries)
            pipe.hgetall(keys.blocklist_vectors)
            version, raw_entries, raw_vectors = pipe.execute()
        entries = [BlocklistEntry.model_validate_json(doc) for doc in raw_entries]
        vectors = {entry_id: decode_vector(text) for entry_id, text in raw_vectors.items()}
        return int(version or 0), BlocklistIndex.build(entries, vectors)


def _sha_field(entry: BlocklistEntry) -> str:
    """The entry's field in ``blocklist:sha256``: the SHA-256, after ``<tenant>:`` in a
    tenant's list (a tenant name holds no ':')."""
    return entry.sha256 if entry.tenant is None else f"{entry.tenant}:{entry.sha256}"


def _encode_vector(vector: np.ndarray) -> str:
    return encode_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1))


class BlocklistCache:
    """A process's view of the blocklist: re-read when its version changes, checked at most
    every `refresh_s` seconds (so a change takes effect within that time)."""

    def __init__(
        self, blocklist: Blocklist, *, refresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._blocklist = blocklist
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._version = -1
        self._index = BlocklistIndex()
        self._checked_at = float("-inf")

    def index(self) -> BlocklistIndex:
        with self._lock:
            now = self._clock()
            if now - self._checked_at < self._refresh_s:
                return self._index
            version = self._blocklist.version()
            if version != self._version:
                self._version, self._index = self._blocklist.snapshot()
            self._checked_at = now
            return self._index
