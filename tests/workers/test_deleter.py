"""Record deletion against the embedded vector store and a real redis-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis

from shared.config import Settings
from shared.events import DeleteRequest, Modality, ObjectRef, UploadEvent, UploadStatus
from shared.status import StatusStore
from shared.vectors.factory import open_vector_store
from shared.vectors.records import VectorRecord
from shared.vectors.store import VectorStore
from workers.deleter import UploadInFlight, delete_record, submitted_after_removal


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


T0 = datetime(2026, 2, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("removed_at", "submitted_at", "kept"),
    [
        (T0, T0 + timedelta(microseconds=1), True),
        (T0, T0, False),
        (T0, T0 - timedelta(milliseconds=5), False),
        (None, T0, False),
        (T0, None, False),
        (T0.replace(tzinfo=None), T0 + timedelta(seconds=1), True),
    ],
)
def test_only_an_upload_submitted_after_the_removal_survives_it(
    removed_at: datetime | None, submitted_at: datetime | None, kept: bool
) -> None:
    request = DeleteRequest(upload_id="u", removed_at=removed_at)
    assert submitted_after_removal(request, submitted_at) is kept


def indexed_at(vectors: VectorStore, statuses: StatusStore, upload_id: str, submitted_at: datetime) -> None:
    ref = ObjectRef(bucket="uploads", key=f"{upload_id}.jpg")
    statuses.create(UploadEvent(id=upload_id, object=ref, submitted_at=submitted_at))
    vector = np.zeros(32, dtype=np.float32)
    vector[0] = 1.0
    record = VectorRecord(
        upload_id=upload_id, vector=vector, modality=Modality.IMAGE, object=ref, created_at=submitted_at
    )
    vectors.upsert([record])
    statuses.advance(upload_id, UploadStatus.INDEXED)


def test_a_removal_older_than_the_indexed_upload_keeps_its_record(
    vectors: VectorStore, redis_conn: redis.Redis
) -> None:
    statuses = StatusStore(redis_conn)
    indexed_at(vectors, statuses, "re", T0 + timedelta(milliseconds=3))  # written again after the removal

    assert delete_record(vectors, statuses, DeleteRequest(upload_id="re", removed_at=T0)) is False
    assert vectors.get("re") is not None
    assert delete_record(vectors, statuses, DeleteRequest(upload_id="re", removed_at=T0 + timedelta(seconds=1)))
    assert vectors.get("re") is None


def test_a_removal_does_not_wait_for_a_run_submitted_after_it(vectors: VectorStore, redis_conn: redis.Redis) -> None:
    statuses = StatusStore(redis_conn)
    statuses.create(UploadEvent(id="new", text="embedding", submitted_at=T0 + timedelta(seconds=1)))

    assert delete_record(vectors, statuses, DeleteRequest(upload_id="new", removed_at=T0)) is False


def test_a_record_written_by_a_resubmission_sent_during_an_older_run_is_kept(
    vectors: VectorStore, redis_conn: redis.Redis
) -> None:
    # The status keeps the older submission (a write during a run adds no new run), the
    # record embeds the newer one.
    statuses = StatusStore(redis_conn)
    indexed_at(vectors, statuses, "mid", T0 - timedelta(seconds=1))
    ref = ObjectRef(bucket="uploads", key="mid.jpg")
    vector = np.zeros(32, dtype=np.float32)
    vector[1] = 1.0
    newer = VectorRecord(
        upload_id="mid", vector=vector, modality=Modality.IMAGE, object=ref, created_at=T0 + timedelta(seconds=1)
    )
    vectors.upsert([newer])

    assert delete_record(vectors, statuses, DeleteRequest(upload_id="mid", removed_at=T0)) is False
    assert vectors.get("mid") is not None
