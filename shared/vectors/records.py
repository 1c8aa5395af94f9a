"""What the vector store holds for each upload."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from shared.events import Modality, Moderation, ObjectRef, utcnow

# Fixed namespace so that the same upload id always maps to the same record uuid, in every
# process and every backend: a redelivered index task overwrites instead of duplicating.
RECORD_NAMESPACE = uuid.UUID("5b0e0d4e-6f6d-4e69-8b69-6e6400000001")


def record_uuid(upload_id: str) -> uuid.UUID:
    return uuid.uuid5(RECORD_NAMESPACE, upload_id)


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """One indexed upload: its L2-normalised embedding and the properties to filter by.

    `vector` is float32, shape (dim,), unit length.
    """

    upload_id: str
    vector: np.ndarray
    modality: Modality
    object: ObjectRef | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    source: str = "api"
    tenant: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    moderation: Moderation = field(default_factory=Moderation)
    model: str = ""
    checkpoint: str = ""
    created_at: datetime = field(default_factory=utcnow)
    indexed_at: datetime = field(default_factory=utcnow)

    @property
    def uuid(self) -> uuid.UUID:
        return record_uuid(self.upload_id)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Conjunctive filters; `None` means "any"."""

    modality: Modality | None = None
    flagged: bool | None = None
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A search result: the record (vector included) and its cosine similarity to the query."""

    record: VectorRecord
    score: float
