"""One index, one model: a real LanceDB store holding one model's vectors refuses another's
through the index writer, naming the re-embedding command; the first model is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.config import IndexSettings
from shared.errors import PermanentError
from shared.events import Modality
from shared.vectors.lancedb import LanceDBVectorStore
from shared.vectors.model_guard import ModelMismatch, check_one_model
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord
from workers.indexer import IndexWriter


def record(upload_id: str, model: str) -> VectorRecord:
    vector = np.zeros(8, dtype=np.float32)
    vector[len(upload_id) % 8] = 1.0
    return VectorRecord(upload_id=upload_id, vector=vector, modality=Modality.TEXT, model=model, checkpoint="c")


def test_a_store_of_one_model_refuses_another_models_vectors(tmp_path: Path) -> None:
    store = LanceDBVectorStore(tmp_path / "vectors", table="uploads", dimension=8)
    first = IndexWriter(store, IndexSettings(max_batch=4, max_wait_ms=0))
    try:
        first.write(record("a", "imagebind-tiny-random"), timeout_s=30)
    finally:
        first.close()
    # a later process (another writer) with another model: the store's own records decide
    writer = IndexWriter(store, IndexSettings(max_batch=4, max_wait_ms=0))
    try:
        with pytest.raises(ModelMismatch) as caught:
            writer.write(record("b", "pe-av-tiny-random"), timeout_s=30)
        assert isinstance(caught.value, PermanentError) and caught.value.reason == "model_mismatch"
        message = str(caught.value)
        assert "omnibind reindex --model pe-av-tiny-random" in message and "imagebind-tiny-random" in message
        writer.write(record("c", "imagebind-tiny-random"), timeout_s=30)
    finally:
        writer.close()
        store.close()
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 2


def test_records_of_one_write_that_disagree_are_refused_and_unlabelled_ones_pass() -> None:
    assert check_one_model(None, [record("a", ""), record("b", "m1")]) == "m1"
    with pytest.raises(ModelMismatch):
        check_one_model(None, [record("a", "m1"), record("b", "m2")])
