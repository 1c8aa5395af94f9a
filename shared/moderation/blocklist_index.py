"""The blocklist's entries, matches and in-memory index: pure (numpy, no I/O), so that the
moderation decision can name a match without importing the Redis store
(`shared.moderation.blocklist`, which re-exports these names)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydantic import Field

from shared.events import Frozen, Modality, utcnow

ENTRY_ID_PREFIX = "bl-"


def entry_id_for(sha256: str, tenant: str | None = None) -> str:
    """The id of the entry of `sha256` in `tenant`'s blocklist (None: the operator-wide one):
    one entry per file and list, so listing a file again updates it."""
    return ENTRY_ID_PREFIX + (f"{tenant}-" if tenant is not None else "") + sha256[:16]


class BlocklistEntry(Frozen):
    id: str
    category: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    modality: Modality
    filename: str | None = None
    note: str | None = None
    model: str | None = None
    checkpoint: str | None = Field(None, description="checkpoint of the stored embedding; None = exact match only")
    tenant: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",  # a tenant name (shared.tenancy)
        description="the tenant whose uploads it flags (a block in its review); None = every upload (operators)",
    )
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
    by_sha256: dict[str, tuple[str, ...]] = field(default_factory=dict)  # one per list holding it
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
            by_sha256=_group_ids((e.sha256, e.id) for e in entries),
            by_checkpoint={
                ckpt: (tuple(i for i, _ in rows), np.stack([v for _, v in rows])) for ckpt, rows in grouped.items()
            },
        )

    def match(
        self,
        *,
        sha256: str | None,
        vector: np.ndarray | None,
        checkpoint: str | None,
        max_distance: float,
        tenant: str | None = None,
    ) -> list[BlocklistMatch]:
        """Every entry an upload of `tenant` matches, nearest first (an exact match first of
        all): entries of its tenant's list and of the operator-wide one (no tenant), never
        another tenant's."""
        matches: dict[str, BlocklistMatch] = {}
        for entry_id in self.by_sha256.get(sha256 or "", ()):
            entry = self.entries[entry_id]
            if entry.tenant in (None, tenant):
                matches[entry.id] = BlocklistMatch(entry.id, entry.category, 0.0, exact=True)
        listed = self.by_checkpoint.get(checkpoint or "")
        if listed is not None and vector is not None:
            ids, matrix = listed
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            if v.shape[0] == matrix.shape[1]:
                distances = 1.0 - matrix @ (v / max(float(np.linalg.norm(v)), 1e-12))  # cosine distance, (n,)
                for i in np.flatnonzero(distances <= max_distance):
                    entry_id = ids[int(i)]
                    entry = self.entries[entry_id]
                    if entry_id not in matches and entry.tenant in (None, tenant):
                        matches[entry_id] = BlocklistMatch(entry_id, entry.category, float(distances[i]), exact=False)
        return sorted(matches.values(), key=lambda m: (not m.exact, m.distance))

    def __len__(self) -> int:
        return len(self.entries)


def _group_ids(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, list[str]] = {}
    for key, entry_id in pairs:
        grouped.setdefault(key, []).append(entry_id)
    return {key: tuple(ids) for key, ids in grouped.items()}
