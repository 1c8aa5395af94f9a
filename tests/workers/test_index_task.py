"""The index task's own bookkeeping around the vector write."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import redis

from shared.config import Settings
from shared.events import DeleteRequest, Modality, Moderation, UploadEvent, UploadStatus
from shared.messages import EmbeddedUpload
from shared.metrics import catalog
from shared.status import StatusStore
from workers.deleter import delete_record
from workers.resources import Resources
from workers.tasks.index import _index, record_moderation


def test_a_redelivered_index_task_records_the_moderation_latency_once(
    make_settings: Callable[..., Settings], redis_url: str, redis_conn: redis.Redis
) -> None:
    resources = Resources(make_settings(redis_url=redis_url))
    event = UploadEvent(id="twice", text="a caption")
    StatusStore(redis_conn, "omnibind").create(event)
    try:
        for _ in range(2):  # the first delivery, then a redelivery of the same message
            record_moderation(resources, event, Moderation(flagged=True, categories=("violence",)))
    finally:
        resources.close()

    record = StatusStore(redis_conn, "omnibind").get("twice")
    assert record is not None and record.status is UploadStatus.MODERATED and record.flagged
    latency = redis_conn.hgetall(f"omnibind:metrics:{catalog.UPLOAD_LATENCY.name}")
    assert latency[catalog.histogram_field(("moderated",), "count")] == "1"


def test_an_index_message_redelivered_after_a_deletion_does_not_bring_the_record_back(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """An index message can come again after its run ended (its worker died before the ack,
    or a copy): before, it wrote the record again, undoing a deletion made in between (3 of
    200 deleted uploads came back in a chaos run with deletes and kill -9)."""
    resources = Resources(make_settings(redis_url=redis_url, moderation={"enabled": False}))
    event = UploadEvent(id="deleted", text="a caption")
    embedded = EmbeddedUpload(
        event=event, modality=Modality.TEXT, vector=np.full(8, 8**-0.5, dtype=np.float32), model="tiny", checkpoint="-"
    )
    try:
        resources.status.create(event)
        resources.status.advance(event.id, UploadStatus.EMBEDDED)
        _index(resources, embedded)
        assert resources.vectors.get(event.id) is not None
        assert delete_record(resources.vectors, resources.status, DeleteRequest(upload_id=event.id))

        _index(resources, embedded)  # the same message again

        assert resources.vectors.get(event.id) is None
        record = resources.status.get(event.id)
        assert record is not None and record.status is UploadStatus.INDEXED
    finally:
        resources.close()
