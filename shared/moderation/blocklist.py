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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import redis
from pydantic import Field

from shared.events import Frozen, Modality, utcnow
from shared.moderation.vectors import decode_vector, encode_vectors
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

ENTRY_ID_PREFIX = "bl-"


def entry_id_for(sha256: str) -> str:
    return ENTRY_ID_PREFIX + sha256[:16]


class BlocklistEntry(Frozen):
    id: str
    category: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    modality: Modality
    filename: str | None = None
    note: str | None = None
    model: str | None = None
    checkpoint: str | None = Field(None, description="checkpoint of the stored embedding; None = exact match only")
    added_at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class BlocklistMatch:
    """An upload matched entry `entry_id`: by SHA-256 (`exact`, distance 0) or by embedding."""

    entry_id: str
    category: str
    distance: float
    exact: bool


@dataclass(frozen=True, slots=True)
class BlocklistIndex:
    """An in-memory snapshot of the blocklist, matched without I/O."""

    entries: dict[str, BlocklistEntry] = field(default_factory=dict)
    by_sha256: dict[str, str] = field(default_factory=dict)
    # checkpoint -> (entry ids, (n, dim) unit float32 matrix)
    by_checkpoint: dict[str, tuple[tuple[str, ...], np.ndarray]] = field(default_factory=dict)

    @classmethod
    def build(cls, entries: Sequence[BlocklistEntry], vectors: dict[str, np.ndarray]) -> BlocklistIndex:
        grouped: dict[str, list[tuple[str, np.ndarray]]] = {}
        for entry in entries:
            vector = vectors.get(entry.id)
            if entry.checkpoint and vector is not None:
                unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
                grouped.setdefault(entry.checkpoint, []).append((entry.id, unit.astype(np.float32)))
        return cls(
            entries={e.id: e for e in entries},
            by_sha256={e.sha256: e.id for e in entries},
            by_checkpoint={
                ckpt: (tuple(i for i, _ in rows), np.stack([v for _, v in rows])) for ckpt, rows in grouped.items()
            },
        )

    def match(
        self, *, sha256: str | None, vector: np.ndarray | None, checkpoint: str | None, max_distance: float
    ) -> list[BlocklistMatch]:
        """Every entry the upload matches, nearest first (an exact match first of all)."""
        matches: dict[str, BlocklistMatch] = {}
        if sha256 and sha256 in self.by_sha256:
            entry = self.entries[self.by_sha256[sha256]]
            matches[entry.id] = BlocklistMatch(entry.id, entry.category, 0.0, exact=True)
        listed = self.by_checkpoint.get(checkpoint or "")
        if listed is not None and vector is not None:
            ids, matrix = listed
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            if v.shape[0] == matrix.shape[1]:
                distances = 1.0 - matrix @ (v / max(float(np.linalg.norm(v)), 1e-12))  # cosine distance, (n,)
                for i in np.flatnonzero(distances <= max_distance):
                    entry_id = ids[int(i)]
                    if entry_id not in matches:
                        entry = self.entries[entry_id]
                        matches[entry_id] = BlocklistMatch(entry_id, entry.category, float(distances[i]), exact=False)
        return sorted(matches.values(), key=lambda m: (not m.exact, m.distance))

    def __len__(self) -> int:
        return len(self.entries)


class Blocklist:
    """The blocklist in Redis. Raises `RedisUnavailable` when Redis is down."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind") -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)

    def add(self, entry: BlocklistEntry, vector: np.ndarray | None = None) -> BlocklistEntry:
        """Store `entry` (and its embedding), replacing an entry of the same id."""
        keys = self.keys
        with translate_redis_errors("adding a blocklist entry"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(keys.blocklist_entries, entry.id, entry.model_dump_json())
            pipe.hset(keys.blocklist_sha256, entry.sha256, entry.id)
            if vector is not None:
                pipe.hset(keys.blocklist_vectors, entry.id, _encode_vector(vector))
            else:
                pipe.hdel(keys.blocklist_vectors, entry.id)
            pipe.incr(keys.blocklist_version)
            pipe.execute()
        return entry

    def remove(self, entry_id: str) -> bool:
        """Delete one entry; False when there was none."""
        entry = self.get(entry_id)
        if entry is None:
            return False
        keys = self.keys
        with translate_redis_errors("removing a blocklist entry"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(keys.blocklist_entries, entry_id)
            pipe.hdel(keys.blocklist_vectors, entry_id)
            pipe.hdel(keys.blocklist_sha256, entry.sha256)
            pipe.incr(keys.blocklist_version)
            pipe.execute()
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
