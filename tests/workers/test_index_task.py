"""The index task's own bookkeeping around the vector write."""

from __future__ import annotations

from collections.abc import Callable

import redis

from shared.config import Settings
from shared.events import Moderation, UploadEvent, UploadStatus
from shared.metrics import catalog
from shared.status import StatusStore
from workers.resources import Resources
from workers.tasks.index import record_moderation


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
