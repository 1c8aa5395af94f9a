"""What the vector store holds for each upload."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

import numpy as np

from shared.events import Modality, Moderation, ObjectRef, utcnow

# Fixed namespace so that the same upload id always maps to the same record uuid, in every
# process and every backend: a redelivered index task overwrites instead of duplicating.
RECORD_NAMESPACE = uuid.UUID("5b0e0d4e-6f6d-4e69-8b69-6e6400000001")


def record_uuid(upload_id: str) -> uuid.UUID:
    return uuid.uuid5(RECORD_NAMESPACE, upload_id)


# The name a search hit gives the record's own `vector` (as opposed to one of its `parts`).
MAIN_PART = "main"
# Part names become column / named-vector names in every backend (``part_<name>``), so they
# are kept to what all of them accept as an identifier.
PART_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def check_part_name(name: str) -> str:
    """`name` if it can name an extra vector of a record; `ValueError` otherwise."""
    if not isinstance(name, str) or not PART_NAME.match(name) or name == MAIN_PART:
        raise ValueError(
            f"a vector part name must be lower-case letters, digits and '_', start with a letter, "
            f"at most 48 characters and not {MAIN_PART!r}; got {name!r}"
        )
    return name


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """One indexed upload: its L2-normalised embedding and the properties to filter by.

    `vector` is float32, shape (dim,), unit length: the upload's main embedding (a video's
    frames, an image, a text, a sound).

    `parts` are further embeddings of the same upload, by name (`check_part_name`), in the
    same space and of the same dimension as `vector`: a video's ``audio_track``, a
    recording's ``transcript``. A search ranks an upload by its best-matching vector, returns
    it once and names that vector (`SearchHit.part`). Writing a record replaces all of its
    vectors: a part left out of a re-written record is gone.
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
    parts: Mapping[str, np.ndarray] = field(default_factory=dict)
    # What was said (audio): `shared.messages.SpeechPart.to_record` — JSON, stored as is.
    transcript: dict[str, Any] | None = None

    @property
    def uuid(self) -> uuid.UUID:
        return record_uuid(self.upload_id)


class AllTenants(Enum):
    """The scope of operator paths only: every tenant, and records without one."""

    ALL_TENANTS = "*"


ALL_TENANTS = AllTenants.ALL_TENANTS

TenantScope = frozenset[str] | Literal[AllTenants.ALL_TENANTS]


def tenants(*names: str) -> frozenset[str]:
    """A scope of the named tenants: `SearchFilters(scope=tenants("acme"))`."""
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Conjunctive filters; `None` means "any".

    `scope` is required, so no search or count runs without a tenant condition: a non-empty
    frozenset of tenants (records of other tenants, and records without a tenant, never
    match), or `ALL_TENANTS`, which only operator paths pass. Raises `ValueError` for an
    empty scope or a tenant that is not a non-empty string, `TypeError` for anything else.
    """

    scope: TenantScope
    modality: Modality | None = None
    flagged: bool | None = None
    # Which of a record's vectors a search compares with the query: `MAIN_PART` and/or part
    # names (`VectorRecord.parts`); None: all of them. Counts ignore it.
    parts: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.parts is not None:
            if not isinstance(self.parts, frozenset) or not self.parts:
                raise ValueError("parts must be None (every vector) or a non-empty frozenset of part names")
            for name in self.parts:
                if name != MAIN_PART:
                    check_part_name(name)
        if self.scope is ALL_TENANTS:
            return
        if not isinstance(self.scope, frozenset):
            raise TypeError(f"scope must be a frozenset of tenants or ALL_TENANTS, not {type(self.scope).__name__}")
        if not self.scope or not all(isinstance(name, str) and name for name in self.scope):
            raise ValueError(f"scope must name at least one tenant, each a non-empty string (got {set(self.scope)})")

    @property
    def scoped_tenants(self) -> frozenset[str] | None:
        """The tenants a record must belong to; None for `ALL_TENANTS`."""
        return None if self.scope is ALL_TENANTS else self.scope


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A search result: the record (vectors included), its cosine similarity to the query and
    which of its vectors matched best (`MAIN_PART`, or the name of one of its `parts`)."""

    record: VectorRecord
    score: float
    part: str = MAIN_PART
    # Why this part matched, in words: for a transcript, the passage and its times.
    detail: str = ""


def best_per_upload(hits: list[SearchHit], k: int) -> list[SearchHit]:
    """The `k` best of `hits` (from one search per vector), each upload once, with the part
    that scored best; best first, ties broken by upload id so the order is reproducible.

    Exact when every per-vector search returned its own top `k`: an upload in the true
    top `k` is in the top `k` of its best vector's search.
    """
    best: dict[str, SearchHit] = {}
    for hit in hits:
        held = best.get(hit.record.upload_id)
        if held is None or hit.score > held.score or (hit.score == held.score and hit.part < held.part):
            best[hit.record.upload_id] = hit
    return sorted(best.values(), key=lambda hit: (-hit.score, hit.record.upload_id))[:k]
