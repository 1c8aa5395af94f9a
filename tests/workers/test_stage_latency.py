"""An upload's latency to each status is recorded once per run, however often its stage's
message is delivered: Redis redelivers a message whose worker died before acking, and a
stage may hand on and then fail to ack. The stages run in-process against a real
redis-server, with the hand-on published through a real Celery app to it."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import redis

from shared.config import Settings
from shared.events import Modality, Stage, UploadEvent, UploadStatus
from shared.messages import EmbeddedUpload
from shared.metrics import catalog
from shared.queue import SPARSE_HEADER, UPLOAD_HEADER, is_sparse, make_celery
from workers.resources import Resources
from workers.stage import run_stage
from workers.tasks import cpu, index


@pytest.fixture
def resources(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Resources]:
    res = Resources(make_settings(redis_url=redis_url, moderation={"enabled": False}))
    try:
        yield res
    finally:
        res.close()


def delivery(resources: Resources) -> Any:
    """What `run_stage` and `send_next` read of a Celery task: a first delivery (no retries)
    whose hand-on goes through a real Celery app to the test's Redis."""
    return SimpleNamespace(app=make_celery(resources.settings), request=SimpleNamespace(retries=0, headers={}))


def latency_counts(redis_conn: redis.Redis) -> dict[str, str]:
    stored = redis_conn.hgetall(f"omnibind:metrics:{catalog.UPLOAD_LATENCY.name}")
    return {
        status.value: stored.get(catalog.histogram_field((status.value,), "count"), "0")
        for status in (UploadStatus.PREPROCESSED, UploadStatus.INDEXED)
    }


def test_a_redelivered_stage_records_its_latency_once(resources: Resources, redis_conn: redis.Redis) -> None:
    event = UploadEvent(id="twice", text="a red circle on white")
    resources.status.create(event)
    task = delivery(resources)
    embedded = EmbeddedUpload(
        event=event, modality=Modality.TEXT, vector=np.full(8, 8**-0.5, dtype=np.float32), model="tiny", checkpoint="-"
    )
    for _ in range(2):  # the first delivery, then a redelivery of the same message
        run_stage(task, resources, Stage.PREPROCESS, event, lambda: cpu._preprocess(task, resources, event))
    resources.status.advance(event.id, UploadStatus.EMBEDDED)
    for _ in range(2):
        run_stage(task, resources, Stage.INDEX, event, lambda: index._index(resources, embedded))
    resources.metrics.recorder.flush()

    record = resources.status.get(event.id)
    assert record is not None and record.status is UploadStatus.INDEXED
    assert redis_conn.llen("omnibind:gpu") == 2  # both deliveries handed on (idempotent downstream)
    assert latency_counts(redis_conn) == {"preprocessed": "1", "indexed": "1"}
    durations = redis_conn.hgetall(f"omnibind:metrics:{catalog.STAGE_DURATION.name}")
    assert durations[catalog.histogram_field(("preprocess", "ok"), "count")] == "2"  # each delivery's work


def test_a_sparse_tenants_upload_stays_marked_sparse_on_its_way_to_the_next_stage(
    resources: Resources, redis_conn: redis.Redis
) -> None:
    # The fair dispatcher marks it (shared.fair_queue); each stage's hand-on carries the mark,
    # so the gpu and index batchers launch it without waiting for company.
    marked, plain = UploadEvent(id="sparse", text="a red circle"), UploadEvent(id="bulk", text="a blue square")
    for event, headers in ((marked, {SPARSE_HEADER: True}), (plain, {})):
        resources.status.create(event)
        task = SimpleNamespace(app=make_celery(resources.settings), request=SimpleNamespace(retries=0, headers=headers))
        run_stage(task, resources, Stage.PREPROCESS, event, functools.partial(cpu._preprocess, task, resources, event))
    sent = [json.loads(raw)["headers"] for raw in reversed(redis_conn.lrange("omnibind:gpu", 0, -1))]
    assert [(h[UPLOAD_HEADER], is_sparse(h)) for h in sent] == [("sparse", True), ("bulk", False)]
