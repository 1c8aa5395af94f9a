"""What workers record: batch sizes from a real MicroBatcher, stage outcomes, latencies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from shared.events import Modality, Moderation, Stage
from shared.metrics import catalog
from shared.metrics.recorder import MetricsRecorder
from workers.batcher import MicroBatcher
from workers.metrics import WorkerMetrics

BATCH_KEY = "omnibind:metrics:omnibind_batch_size"


def field(labels: tuple[str, ...], part: str) -> str:
    return catalog.histogram_field(labels, part)


def test_batch_sizes_of_a_real_batcher_are_recorded_once(redis_conn: redis.Redis) -> None:
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        lambda key, items: [i * 2 for i in items], lambda out: out, group_of=lambda i: "g", max_batch=4, max_wait_s=0.5
    )
    metrics = WorkerMetrics(MetricsRecorder(redis_conn, "omnibind"))
    metrics.track_batches("gpu", batcher.stats)
    try:
        futures = [batcher.submit(i) for i in range(8)]  # fills two batches of 4 at once
        assert [f.result(timeout=30) for f in futures] == [i * 2 for i in range(8)]
    finally:
        batcher.close()
    metrics.recorder.flush()
    metrics.recorder.flush()  # no new batches: nothing added twice
    stored = redis_conn.hgetall(BATCH_KEY)
    assert stored[field(("gpu",), "count")] == str(batcher.stats.batches)
    assert float(stored[field(("gpu",), "sum")]) == 8
    sizes = {size: n for size, n in batcher.stats.size_histogram.items()}
    for size, n in sizes.items():
        assert stored[field(("gpu",), catalog.BATCH_SIZE.bucket_of(float(size)))] == str(n)
    metrics.close()


def test_stage_outcomes_latencies_and_flags_are_recorded(redis_conn: redis.Redis) -> None:
    metrics = WorkerMetrics(MetricsRecorder(redis_conn, "omnibind"))
    metrics.stage_finished(Stage.EMBED, ok=True, duration_s=0.02)
    metrics.stage_finished(Stage.EMBED, ok=False, duration_s=3.0)
    naive_submission = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=100)  # no offset: taken as UTC
    metrics.reached(Stage.INDEX, naive_submission)
    metrics.indexed(Modality.IMAGE, Moderation(flagged=True, categories=("violence", "gore")))
    metrics.indexed(Modality.TEXT, Moderation())
    metrics.close()

    duration = redis_conn.hgetall("omnibind:metrics:omnibind_stage_duration_seconds")
    assert duration[field(("embed", "ok"), "0.025")] == "1"
    assert duration[field(("embed", "error"), "5.0")] == "1"
    latency = redis_conn.hgetall("omnibind:metrics:omnibind_upload_latency_seconds")
    assert latency[field(("indexed",), "120.0")] == "1"  # 100 s, with 20 s to spare
    assert redis_conn.hgetall("omnibind:metrics:omnibind_uploads_indexed") == {'["image"]': "1", '["text"]': "1"}
    assert redis_conn.hgetall("omnibind:metrics:omnibind_uploads_flagged") == {'["image"]': "1"}
    assert redis_conn.hgetall("omnibind:metrics:omnibind_flagged_categories") == {'["violence"]': "1", '["gore"]': "1"}
