"""One index, one model: vectors of two embedding models are not comparable (different
spaces, often different dimensions), so a store that holds one model's vectors refuses
another's. Every record carries its model name (`VectorRecord.model`); the first record
of a store fixes its model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from shared.errors import PermanentError
from shared.vectors.records import VectorRecord
from shared.vectors.store import VectorStore


class ModelMismatch(PermanentError):
    reason = "model_mismatch"


def stored_model(store: VectorStore) -> str | None:
    """The model of the store's records (of the first one read), or None for an empty store
    or records written before models were recorded."""
    records = store.iter_records(batch_size=1)
    try:
        first = next(iter(itertools.islice(records, 1)), None)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
    return first.model or None if first is not None else None


def check_one_model(stored: str | None, records: Sequence[VectorRecord]) -> str | None:
    """The store's model after writing `records`; raises `ModelMismatch` naming the fix when
    a record's model is not `stored` (or the records disagree among themselves)."""
    model = stored
    for record in records:
        if not record.model:
            continue
        if model is None:
            model = record.model
        elif record.model != model:
            raise ModelMismatch(
                f"this index holds vectors of {model}; {record.upload_id!r} was embedded by {record.model}. "
                f"Vectors of two models cannot share one index: re-embed the stored uploads with "
                f"`omnibind reindex --model {record.model}` (docs/model.md, 'Switching models'), or point "
                f"this model at another index (OMNIBIND_VECTORS__TABLE / OMNIBIND_VECTORS__COLLECTION)."
            )
    return model
