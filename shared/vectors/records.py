"""What the vector store holds for each upload."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Literal

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

    def __post_init__(self) -> None:
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
    """A search result: the record (vector included) and its cosine similarity to the query."""

    record: VectorRecord
    score: float
