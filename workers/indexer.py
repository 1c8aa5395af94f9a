"""The index worker's runtime: records from concurrent index tasks written in batches.

Embedded stores pay per write call (LanceDB commits a new table version per call), so
records are gathered for up to `max_wait_ms` and upserted together. A batch that fails is
re-tried record by record, so one bad record fails alone. A record of another model than
the store holds fails alone too (`shared.vectors.model_guard`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared.config import IndexSettings
from shared.errors import TransientError
from shared.vectors.model_guard import check_one_model, stored_model
from shared.vectors.records import VectorRecord
from shared.vectors.store import VectorStore
from workers.batcher import MicroBatcher

log = logging.getLogger(__name__)

Outcome = None | BaseException


class IndexTimeout(TransientError):
    """No write confirmation within the task's time limit (the store is slow or stuck)."""

    reason = "index_timeout"


class IndexWriter:
    def __init__(self, store: VectorStore, settings: IndexSettings) -> None:
        self.store = store
        self._model: str | None = None  # the store's model, read once (the first write fixes it)
        self._model_known = False
        self.batcher: MicroBatcher[str, VectorRecord, Outcome] = MicroBatcher(
            self._write,
            lambda outcomes: outcomes,
            group_of=lambda record: "records",
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            name="index",
        )

    def write(self, record: VectorRecord, *, timeout_s: float, urgent: bool = False) -> None:
        """Upsert `record` (batched with concurrent callers; `urgent`: without waiting for
        company); raises what writing it raised, or `IndexTimeout` after `timeout_s`.
        Threads-pool workers enforce no Celery time limit, so this wait is what keeps a task
        within the visibility timeout."""
        try:
            self.batcher.submit(record, urgent=urgent).result(timeout=timeout_s)
        except TimeoutError as exc:
            raise IndexTimeout(f"the vector store did not confirm the write within {timeout_s:g} s") from exc

    def close(self) -> None:
        self.batcher.close()

    def _checked(self, records: list[VectorRecord]) -> None:
        """Raise `ModelMismatch` unless every record's model is the store's."""
        if not self._model_known:
            self._model = stored_model(self.store)
            self._model_known = True
        model = check_one_model(self._model, records)
        self.store.upsert(records)
        self._model = model

    def _write(self, key: str, records: list[VectorRecord]) -> Sequence[Outcome]:
        try:
            self._checked(records)
            return [None] * len(records)
        except Exception as exc:
            if len(records) == 1:
                return [exc]
            log.warning("batch upsert of %d records failed (%s); writing them one by one", len(records), exc)
            return [self._write_one(record) for record in records]

    def _write_one(self, record: VectorRecord) -> Outcome:
        try:
            self._checked([record])
            return None
        except Exception as exc:
            return exc
