"""The blocklist's entries, matches and in-memory index: pure (numpy, no I/O), so that the
moderation decision can name a match without importing the Redis store
(`shared.moderation.blocklist`, which re-exports these names)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydantic import Field

from shared.events import Frozen, Modality, utcnow

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
