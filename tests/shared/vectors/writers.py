"""Writer processes for the LanceDB concurrency tests (a module of its own so that a
spawned child imports only this, not the test module and pytest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.events import Modality
from shared.vectors.lancedb import LanceDBVectorStore
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord

from .conftest import unit_vector


def upsert_in_chunks(path: Path, table: str, writer: str, ids: list[str], chunk: int, start: Any, step: Any) -> None:
    """Open the store, wait for `start` (a multiprocessing Event), then upsert `ids` in
    chunks of `chunk`, each record tagged with `writer` in its metadata.

    With `step` (a multiprocessing Barrier) every writer waits for the others before each
    chunk: lockstep, the worst case for two writers inserting the same new ids.
    """
    store = LanceDBVectorStore(path, table=table, compact_every_writes=7, lock_timeout_s=120)
    records = [
        VectorRecord(
            upload_id=upload_id,
            vector=unit_vector(f"{writer}-{upload_id}"),
            modality=Modality.IMAGE,
            metadata={"writer": writer},
        )
        for upload_id in ids
    ]
    # Open the connection and the table now, so that the writers start level.
    store.count(SearchFilters(scope=ALL_TENANTS))
    start.wait()
    for offset in range(0, len(records), chunk):
        if step is not None:
            step.wait(timeout=60)
        store.upsert(records[offset : offset + chunk])
    store.close()
