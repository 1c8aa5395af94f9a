"""The vector store port.

Adapters: `shared.vectors.lancedb` (embedded, several processes may write) and
`shared.vectors.weaviate` (weaviate-client v4). Both are idempotent by upload id (the record
uuid is `record_uuid(upload_id)`), store cosine-comparable unit vectors, and pass the shared
contract suite in ``tests/shared/vectors``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from shared.vectors.records import SearchFilters, SearchHit, VectorRecord


@runtime_checkable
class VectorStore(Protocol):
    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or overwrite records by upload id, all or nothing per call where the backend
        allows; any per-object failure raises (never silently dropped).

        The first write fixes the vector dimension; a record of another dimension raises
        `ConfigError`. Raises `VectorStoreUnavailable` when the backend is down.
        """
        ...

    def get(self, upload_id: str) -> VectorRecord | None:
        """The record of `upload_id` (vector included), or None."""
        ...

    def delete(self, upload_ids: Sequence[str]) -> int:
        """Delete records; returns how many existed."""
        ...

    def search(self, vector: np.ndarray, *, k: int = 10, filters: SearchFilters) -> list[SearchHit]:
        """The `k` nearest records by cosine similarity (score = 1 - cosine distance, 1.0 for
        the same direction), best first, among those matching `filters` (always within
        `filters.scope`: there is no unscoped search); sees every write
        that returned before the call (read-your-writes). An empty store gives [].

        Raises `ConfigError` if the query's dimension is not the store's, `ValueError` if
        `k` < 1.
        """
        ...

    def count(self, filters: SearchFilters) -> int:
        """How many records match `filters` (every record: `SearchFilters(scope=ALL_TENANTS)`)."""
        ...

    def iter_records(self, batch_size: int = 256) -> Iterator[VectorRecord]:
        """Every record, vectors included (used to re-score moderation without re-embedding)."""
        ...

    def close(self) -> None:
        """Release this process's connections; idempotent. Using the store again reopens them."""
        ...
