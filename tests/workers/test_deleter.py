"""Record deletion against the embedded vector store and a real redis-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis

from shared.config import Settings
from shared.events import DeleteRequest, Modality, ObjectRef, UploadEvent, UploadStatus
from shared.status import StatusStore
from shared.vectors.factory import open_vector_store
from shared.vectors.records import VectorRecord
from shared.vectors.store import VectorStore
from workers.deleter import UploadInFlight, delete_record


@pytest.fixture
def vectors(make_settings: Callable[..., Settings]) -> Iterator[VectorStore]:
    store = open_vector_store(make_settings())
    yield store
    store.close()


def indexed(vectors: VectorStore, statuses: StatusStore, upload_id: str, version_id: str | None = None) -> None:
    ref = ObjectRef(bucket="uploads", key=f"{upload_id}.jpg", version_id=version_id)
    statuses.create(UploadEvent(id=upload_id, object=ref))
    vector = np.zeros(32, dtype=np.float32)
    vector[0] = 1.0
    vectors.upsert([VectorRecord(upload_id=upload_id, vector=vector, modality=Modality.IMAGE, object=ref)])
    statuses.advance(upload_id, UploadStatus.INDEXED)


def test_a_finished_uploads_record_is_deleted_once(vectors: VectorStore, redis_conn: redis.Redis) -> None:
    statuses = StatusStore(redis_conn)
    indexed(vectors, statuses, "u1")

    assert delete_record(vectors, statuses, DeleteRequest(upload_id="u1")) is True
    assert vectors.get("u1") is None
    assert delete_record(vectors, statuses, DeleteRequest(upload_id="u1")) is False, "deleting twice is a no-op"
    assert delete_record(vectors, statuses, DeleteRequest(upload_id="never-seen")) is False


def test_a_delete_waits_while_the_upload_is_in_flight(vectors: VectorStore, redis_conn: redis.Redis) -> None:
    statuses = StatusStore(redis_conn)
    statuses.create(UploadEvent(id="busy", text="still embedding"))

    with pytest.raises(UploadInFlight) as caught:
        delete_record(vectors, statuses, DeleteRequest(upload_id="busy"))
    assert caught.value.reason == "upload_in_flight"
    assert delete_record(vectors, statuses, DeleteRequest(upload_id="busy"), wait_in_flight=False) is False


def test_removing_another_version_keeps_the_record_of_the_indexed_one(
    vectors: VectorStore, redis_conn: redis.Redis
) -> None:
    statuses = StatusStore(redis_conn)
    indexed(vectors, statuses, "v", version_id="v2")

    assert delete_record(vectors, statuses, DeleteRequest(upload_id="v", object_version_id="v1")) is False
    assert vectors.get("v") is not None
    assert delete_record(vectors, statuses, DeleteRequest(upload_id="v", object_version_id="v2")) is True
    assert vectors.get("v") is None
