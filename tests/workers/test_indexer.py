"""The index worker's writer: a stuck vector store ends the wait as a transient error, so a
threads-pool task (no Celery time limit there) finishes within its time limit and retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from shared.config import IndexSettings
from shared.errors import TransientError
from shared.events import Modality
from shared.vectors.records import VectorRecord
from workers.indexer import IndexTimeout, IndexWriter


class StuckStore:
    """A vector store whose writes hang until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self.release.wait(10)

    def iter_records(self, batch_size: int = 256) -> Iterator[VectorRecord]:
        return iter(())  # empty: the writer's one-model check passes


def _record() -> VectorRecord:
    return VectorRecord(upload_id="u1", vector=np.ones(4, dtype=np.float32) / 2, modality=Modality.TEXT)


def test_a_write_the_store_never_confirms_times_out_as_a_transient_error() -> None:
    store = StuckStore()
    writer = IndexWriter(store, IndexSettings(max_batch=1, max_wait_ms=0))  # type: ignore[arg-type]
    try:
        with pytest.raises(IndexTimeout) as caught:
            writer.write(_record(), timeout_s=0.2)
        assert isinstance(caught.value, TransientError) and caught.value.reason == "index_timeout"
    finally:
        store.release.set()
        writer.close()
