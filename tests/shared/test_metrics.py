"""Metrics recorded by (simulated) worker processes in a real Redis and read back by the
exporter's collector, as Prometheus would scrape them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from shared.config import Settings
from shared.events import UploadEvent
from shared.heartbeat import Heartbeat
from shared.metrics import catalog
from shared.metrics.collector import PipelineCollector
from shared.metrics.recorder import MetricsRecorder
from shared.redis_client import redis_client
from shared.status import StatusStore
from tests.support.redis_server import RedisServers
from tests.support.waiting import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: redis.Redis, settings: Settings) -> Samples:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(client, settings))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_url: str) -> Settings:
    return make_settings(redis_url=SecretStr(redis_url))


def test_counters_and_histograms_of_several_processes_add_up(redis_conn: redis.Redis, settings: Settings) -> None:
    first, second = (MetricsRecorder(redis_conn, "omnibind") for _ in range(2))
    first.inc(catalog.UPLOADS_FAILED, ("preprocess", "corrupt_media"))
    second.inc(catalog.UPLOADS_FAILED, ("preprocess", "corrupt_media"), by=2)
    second.inc(catalog.UPLOADS_FAILED, ("embed", "gpu_out_of_memory"))
    for value in (0.004, 0.2, 0.2):
        first.observe(catalog.UPLOAD_LATENCY, ("indexed",), value)
    second.observe(catalog.UPLOAD_LATENCY, ("indexed",), 1000.0)
    assert first.flush() and second.flush()
    assert first.flush()  # nothing pending: nothing written twice

    samples = scrape(redis_conn, settings)
    failed = "omnibind_uploads_failed_total"
    assert samples[failed, (("reason", "corrupt_media"), ("stage", "preprocess"))] == 3
    assert samples[failed, (("reason", "gpu_out_of_memory"), ("stage", "embed"))] == 1
    latency = "omnibind_upload_latency_seconds"
    indexed = ("status", "indexed")
    assert samples[f"{latency}_bucket", (("le", "0.005"), indexed)] == 1
    assert samples[f"{latency}_bucket", (("le", "0.1"), indexed)] == 1
    assert samples[f"{latency}_bucket", (("le", "0.25"), indexed)] == 3  # cumulative
    assert samples[f"{latency}_bucket", (("le", "600.0"), indexed)] == 3
    assert samples[f"{latency}_bucket", (("le", "+Inf"), indexed)] == 4
    assert samples[f"{latency}_count", (indexed,)] == 4
    assert samples[f"{latency}_sum", (indexed,)] == pytest.approx(1000.404)
    assert samples["omnibind_redis_up", ()] == 1


def test_live_gauges_read_queues_statuses_and_workers(redis_conn: redis.Redis, settings: Settings) -> None:
    redis_conn.rpush("omnibind:cpu", *[b"m"] * 3)
    redis_conn.rpush("omnibind:index", b"m")
    StatusStore(redis_conn).create(UploadEvent(text="queued one"))
    beat = Heartbeat(redis_conn, "omnibind", "gpu")
    beat.start()
    try:
        samples = scrape(redis_conn, settings)
    finally:
        beat.stop()
    assert samples["omnibind_queue_length", (("queue", "cpu"),)] == 3
    assert samples["omnibind_queue_length", (("queue", "gpu"),)] == 0
    assert samples["omnibind_queue_length", (("queue", "index"),)] == 1
    assert samples["omnibind_uploads", (("status", "queued"),)] == 1
    assert samples["omnibind_uploads", (("status", "indexed"),)] == 0
    assert samples["omnibind_workers", (("kind", "gpu"),)] == 1
    assert samples["omnibind_workers", (("kind", "cpu"),)] == 0
    assert samples["omnibind_backpressure_max_cpu_queue", ()] == settings.backpressure.max_cpu_queue


def test_every_family_is_exported_even_before_anything_was_recorded(
    redis_conn: redis.Redis, settings: Settings
) -> None:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(redis_conn, settings))
    text = generate_latest(registry).decode()
    for family in catalog.RECORDED:
        exported = f"{family.name}_total" if family.kind == "counter" else family.name
        assert f"# TYPE {exported} {family.kind}" in text
    for gauge in catalog.GAUGES:
        assert f"# TYPE {gauge.name} gauge" in text


def test_a_scrape_without_redis_reports_redis_down(make_settings: Callable[..., Settings]) -> None:
    client = redis_client("redis://127.0.0.1:1/0", retries=0, connect_timeout_s=1.0)
    samples = scrape(client, make_settings())
    assert samples == {("omnibind_redis_up", ()): 0.0}


def test_a_failed_flush_keeps_its_counts_for_the_next_one(redis_servers: RedisServers, tmp_path: Path) -> None:
    server = redis_servers.start(data_dir=tmp_path / "r")
    port = server.port
    client = redis_client(server.url, retries=0, connect_timeout_s=1.0)
    recorder = MetricsRecorder(client, "omnibind")
    recorder.inc(catalog.STAGE_RETRIES, ("index", "vector_store_unavailable"), by=4)
    assert recorder.flush()
    recorder.inc(catalog.STAGE_RETRIES, ("index", "vector_store_unavailable"))
    server.stop()
    assert recorder.flush() is False
    redis_servers.start(data_dir=tmp_path / "r", port=port)
    assert recorder.flush()
    field = catalog.labels_field(("index", "vector_store_unavailable"))
    assert client.hget("omnibind:metrics:omnibind_stage_retries", field) == "5"


def test_the_background_thread_flushes_and_close_flushes_the_rest(redis_conn: redis.Redis) -> None:
    recorder = MetricsRecorder(redis_conn, "omnibind", flush_interval_s=0.05)
    recorder.inc(catalog.UPLOADS_INDEXED, ("image",))
    key, field = "omnibind:metrics:omnibind_uploads_indexed", catalog.labels_field(("image",))
    try:
        wait_until(
            lambda: redis_conn.hget(key, field) == "1", timeout_s=30, what="the flush thread to write", poll_s=0.02
        )
    finally:
        recorder.flush_interval_s = 3600.0
        recorder.close()  # also when the wait fails: its thread must not write into the next test
    recorder.inc(catalog.UPLOADS_INDEXED, ("image",))  # after close: no thread; flushed on demand
    recorder.flush()
    assert redis_conn.hget(key, field) == "2"


def test_a_disabled_recorder_writes_nothing(redis_conn: redis.Redis) -> None:
    recorder = MetricsRecorder(redis_conn, "omnibind", enabled=False)
    recorder.inc(catalog.UPLOADS_INDEXED, ("text",))
    recorder.close()
    assert redis_conn.keys("omnibind:metrics:*") == []


def test_labels_must_match_the_family() -> None:
    recorder = MetricsRecorder(redis.Redis(), "omnibind")
    with pytest.raises(ValueError, match="takes labels"):
        recorder.inc(catalog.UPLOADS_INDEXED, ("image", "extra"))
    with pytest.raises(ValueError, match="is a counter"):
        recorder.observe(catalog.UPLOADS_INDEXED, ("image",), 1.0)


def test_fields_round_trip_and_buckets_follow_le() -> None:
    labels = ('tab\there "quoted"', "ünï")
    assert catalog.parse_field(catalog.histogram_field(labels, "0.25")) == (labels, "0.25")
    assert catalog.parse_field(catalog.labels_field(labels)) == (labels, None)
    family = catalog.UPLOAD_LATENCY
    assert family.bucket_of(0.25) == "0.25"  # le: a value equal to a bound is in its bucket
    assert family.bucket_of(0.2500001) == "0.5"
    assert family.bucket_of(10_000.0) == "+Inf"
    assert catalog.BATCH_SIZE.bucket_of(3.0) == "4.0"


def test_the_operations_guide_lists_every_metric() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    names = [family.name for family in catalog.RECORDED] + [gauge.name for gauge in catalog.GAUGES]
    names += ["omnibind_http_requests_total", "omnibind_http_request_duration_seconds"]
    assert [name for name in names if f"`{name}`" not in guide] == []
