from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import redis

from shared.errors import CorruptMedia
from shared.events import Modality, ObjectRef, Result, Stage, UploadEvent, UploadStatus
from shared.redis_client import RedisUnavailable, redis_client
from shared.status import StatusRecord, StatusStore, parse_record
from shared.streams import DeliveryCounter, ResultStream

PIPELINE = (UploadStatus.PREPROCESSED, UploadStatus.EMBEDDED, UploadStatus.MODERATED, UploadStatus.INDEXED)

StoreFactory = Callable[..., StatusStore]


@pytest.fixture
def make_store(redis_conn: redis.Redis) -> StoreFactory:
    """A StatusStore on this test's fresh Redis; keyword overrides for its options."""

    def factory(**options: object) -> StatusStore:
        return StatusStore(redis_conn, "t", **options)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def store(make_store: StoreFactory) -> StatusStore:
    return make_store()


def _event(upload_id: str = "u1", **overrides: object) -> UploadEvent:
    fields: dict[str, object] = {
        "id": upload_id,
        "object": ObjectRef(bucket="uploads", key=f"{upload_id}.jpg", size=10, content_type="image/jpeg"),
        "modality": Modality.IMAGE,
        "source": "test",
        "tenant": "acme",
    }
    fields.update(overrides)
    return UploadEvent.model_validate(fields)


def _results(client: redis.Redis, prefix: str = "t") -> list[dict[str, str]]:
    return [fields for _id, fields in client.xrange(f"{prefix}:results")]  # type: ignore[union-attr]


def test_create_records_a_queued_upload_with_its_identity(store: StatusStore) -> None:
    event = _event()
    assert store.create(event)
    record = store.get("u1")
    assert record is not None
    assert record.status is UploadStatus.QUEUED
    assert record.run == 1
    assert (record.modality, record.source, record.tenant) == (Modality.IMAGE, "test", "acme")
    assert record.object == event.object
    assert record.submitted_at == event.submitted_at
    assert UploadStatus.QUEUED in record.timestamps
    assert record.timestamps[UploadStatus.QUEUED].tzinfo is not None


def test_unknown_upload_reads_as_none(store: StatusStore) -> None:
    assert store.get("nope") is None


def test_resubmitting_an_upload_in_flight_does_not_reset_it(store: StatusStore) -> None:
    store.create(_event())
    store.advance("u1", UploadStatus.EMBEDDED)
    assert not store.create(_event())
    assert not store.create(_event(submitted_at=datetime.now(UTC) + timedelta(seconds=5)))
    record = store.get("u1")
    assert record is not None and record.status is UploadStatus.EMBEDDED


def test_status_moves_forward_only(store: StatusStore) -> None:
    store.create(_event())
    assert store.advance("u1", UploadStatus.EMBEDDED)  # skipping preprocessed is allowed
    assert not store.advance("u1", UploadStatus.PREPROCESSED)
    assert not store.advance("u1", UploadStatus.EMBEDDED)
    assert store.advance("u1", UploadStatus.MODERATED, flagged=True, categories=["violence"])
    record = store.get("u1")
    assert record is not None
    assert record.status is UploadStatus.MODERATED
    assert record.flagged is True and record.categories == ("violence",)
    assert UploadStatus.PREPROCESSED not in record.timestamps


def test_a_refused_transition_writes_nothing(store: StatusStore) -> None:
    store.create(_event())
    store.advance("u1", UploadStatus.MODERATED, flagged=False)
    assert not store.advance("u1", UploadStatus.EMBEDDED, flagged=True, extra={"late": 1})
    record = store.get("u1")
    assert record is not None and record.flagged is False and "late" not in record.extra


def test_advance_refuses_queued_and_failed(store: StatusStore) -> None:
    with pytest.raises(ValueError, match="fail"):
        store.advance("u1", UploadStatus.FAILED)
    with pytest.raises(ValueError, match="requeue"):
        store.advance("u1", UploadStatus.QUEUED)


def test_indexing_emits_one_result_event_with_the_record(store: StatusStore, redis_conn: redis.Redis) -> None:
    event = _event()
    store.create(event)
    for status in PIPELINE[:-1]:
        store.advance("u1", status)
    store.advance("u1", UploadStatus.MODERATED)  # redelivery: refused, no event
    store.advance("u1", UploadStatus.INDEXED, flagged=True, categories=["nsfw", "gore"])
    assert not store.advance("u1", UploadStatus.INDEXED)
    assert not store.fail("u1", Stage.INDEX, CorruptMedia("late failure"))
    [entry] = _results(redis_conn)
    result = Result.model_validate_json(entry["result"])
    assert result.upload_id == "u1"
    assert result.status is UploadStatus.INDEXED
    assert result.modality is Modality.IMAGE
    assert result.object == event.object
    assert result.flagged is True and result.categories == ("nsfw", "gore")
    assert result.error_reason is None and result.error is None
    assert entry["status"] == "indexed" and entry["flagged"] == "true" and entry["run"] == "1"
    assert json.loads(entry["categories"]) == ["nsfw", "gore"]
    record = store.get("u1")
    assert record is not None and record.to_result().at == result.at


def test_failure_records_reason_stage_and_emits_a_result(store: StatusStore, redis_conn: redis.Redis) -> None:
    store.create(_event())
    store.advance("u1", UploadStatus.PREPROCESSED)
    assert store.fail("u1", Stage.EMBED, CorruptMedia("truncated JPEG"))
    assert not store.advance("u1", UploadStatus.EMBEDDED)
    record = store.get("u1")
    assert record is not None
    assert record.status is UploadStatus.FAILED
    assert (record.error_reason, record.error, record.failed_stage) == ("corrupt_media", "truncated JPEG", Stage.EMBED)
    [entry] = _results(redis_conn)
    assert entry["error_reason"] == "corrupt_media" and entry["error"] == "truncated JPEG"
    assert Result.model_validate_json(entry["result"]).status is UploadStatus.FAILED


def test_failure_from_a_stage_the_upload_already_passed_is_ignored(store: StatusStore) -> None:
    store.create(_event())
    store.advance("u1", UploadStatus.EMBEDDED)
    assert not store.fail("u1", Stage.PREPROCESS, CorruptMedia("stale redelivery"))
    assert not store.fail("u1", Stage.EMBED, CorruptMedia("stale redelivery"))
    record = store.get("u1")
    assert record is not None and record.status is UploadStatus.EMBEDDED and record.error is None
    assert store.fail("u1", Stage.MODERATE, CorruptMedia("real failure"))


def test_unexpected_exceptions_fail_as_internal_errors(store: StatusStore) -> None:
    store.create(_event())
    store.fail("u1", Stage.MODERATE, KeyError("boom"))
    record = store.get("u1")
    assert record is not None
    assert record.error_reason == "internal_error"
    assert record.error == "KeyError: 'boom'"


def test_long_error_messages_are_cut(store: StatusStore) -> None:
    store.create(_event())
    store.fail("u1", Stage.PREPROCESS, CorruptMedia("x" * 100_000))
    record = store.get("u1")
    assert record is not None and record.error is not None and len(record.error) == 4000


def test_transition_of_an_unknown_upload_creates_its_record(store: StatusStore, redis_conn: redis.Redis) -> None:
    assert store.fail("ghost", Stage.PREPROCESS, CorruptMedia("bad"))
    record = store.get("ghost")
    assert record is not None and record.status is UploadStatus.FAILED and record.modality is None
    assert Result.model_validate_json(_results(redis_conn)[0]["result"]).object is None


def test_requeue_starts_a_new_run_keeping_identity(store: StatusStore, redis_conn: redis.Redis) -> None:
    event = _event()
    store.create(event)
    store.advance("u1", UploadStatus.EMBEDDED, extra={"embed_ms": 12})
    store.fail("u1", Stage.MODERATE, CorruptMedia("bad"))
    assert store.requeue("u1")
    record = store.get("u1")
    assert record is not None
    assert record.status is UploadStatus.QUEUED and record.run == 2
    assert record.object == event.object and record.tenant == "acme"
    assert record.error_reason is None and record.failed_stage is None and record.extra == {}
    assert set(record.timestamps) == {UploadStatus.QUEUED}
    assert redis_conn.ttl("t:upload:u1") == -1
    for status in PIPELINE:
        assert store.advance("u1", status)
    runs = [entry["run"] for entry in _results(redis_conn)]
    assert runs == ["1", "2"]


def test_requeue_refuses_uploads_in_flight_or_unknown(store: StatusStore) -> None:
    store.create(_event())
    assert not store.requeue("u1")
    assert not store.requeue("unknown")


def test_new_submission_of_a_finished_upload_starts_a_new_run(store: StatusStore) -> None:
    first = _event()
    store.create(first)
    store.fail("u1", Stage.PREPROCESS, CorruptMedia("bad"))
    assert not store.create(first), "the same submission delivered again must not re-run"
    second = _event(object=ObjectRef(bucket="uploads", key="fixed.jpg"), submitted_at=datetime.now(UTC))
    assert store.create(second)
    record = store.get("u1")
    assert record is not None
    assert record.status is UploadStatus.QUEUED and record.run == 2
    assert record.object is not None and record.object.key == "fixed.jpg"
    assert record.error is None


@contextmanager
def _redis_full(client: redis.Redis) -> Iterator[None]:
    """Redis refusing every write that needs memory (``maxmemory`` 1 under noeviction)."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        client.config_set("maxmemory", 0)


def test_a_new_run_refused_by_a_full_redis_leaves_the_previous_record_intact(
    store: StatusStore, redis_conn: redis.Redis
) -> None:
    # A script runs to its end once it wrote (Redis cannot stop it half-way), so its first
    # write must be one a full Redis refuses: a DEL first let create and requeue write past
    # maxmemory, replacing the finished record while everything else was refused.
    store.create(_event())
    store.fail("u1", Stage.PREPROCESS, CorruptMedia("bad"))
    before = redis_conn.hgetall("t:upload:u1")
    counts = store.counts()
    with _redis_full(redis_conn):
        with pytest.raises(RedisUnavailable):
            store.create(_event(submitted_at=datetime.now(UTC) + timedelta(seconds=5)))
        with pytest.raises(RedisUnavailable):
            store.requeue("u1")
    assert redis_conn.hgetall("t:upload:u1") == before
    assert store.counts() == counts
    assert redis_conn.ttl("t:upload:u1") > 0  # type: ignore[operator]
    assert store.requeue("u1"), "once Redis has room the new run starts"


def test_finished_records_expire_and_ttl_zero_keeps_them(make_store: StoreFactory, redis_conn: redis.Redis) -> None:
    expiring, keeping = make_store(ttl_s=3600), make_store(ttl_s=0)
    expiring.create(_event("a"))
    keeping.create(_event("b"))
    assert redis_conn.ttl("t:upload:a") == -1, "records in flight never expire"
    expiring.advance("a", UploadStatus.INDEXED)
    keeping.advance("b", UploadStatus.INDEXED)
    assert 3590 <= redis_conn.ttl("t:upload:a") <= 3600  # type: ignore[operator]
    assert redis_conn.ttl("t:upload:b") == -1


def test_counts_follow_transitions(store: StatusStore) -> None:
    for upload_id in ("a", "b", "c", "d"):
        store.create(_event(upload_id))
    store.advance("a", UploadStatus.INDEXED)
    store.advance("b", UploadStatus.EMBEDDED)
    store.fail("c", Stage.EMBED, CorruptMedia("bad"))
    store.advance("a", UploadStatus.INDEXED)  # refused: counted once
    counts = store.counts()
    assert counts == {
        UploadStatus.QUEUED: 1,
        UploadStatus.PREPROCESSED: 0,
        UploadStatus.EMBEDDED: 1,
        UploadStatus.MODERATED: 0,
        UploadStatus.INDEXED: 1,
        UploadStatus.FAILED: 1,
    }
    store.requeue("c")
    assert store.counts()[UploadStatus.FAILED] == 0
    assert store.counts()[UploadStatus.QUEUED] == 2


def test_recent_lists_newest_first_and_is_capped(make_store: StoreFactory) -> None:
    store = make_store(recent_max=3)
    for n in range(5):
        store.create(_event(f"u{n}", submitted_at=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n)))
    assert [r.upload_id for r in store.recent(10)] == ["u4", "u3", "u2"]
    assert [r.upload_id for r in store.recent(2)] == ["u4", "u3"]
    assert store.recent(0) == []


def test_extra_fields_round_trip_as_json(store: StatusStore) -> None:
    store.create(_event())
    extra = {"scores": {"nsfw": 0.91, "gore": 0.02}, "reasons": [], "policy": "v3", "empty": {}}
    store.advance("u1", UploadStatus.MODERATED, extra=extra)
    store.advance("u1", UploadStatus.INDEXED, extra={"vector_id": "abc"})
    record = store.get("u1")
    assert record is not None
    assert record.extra == {**extra, "vector_id": "abc"}


def test_finishing_clears_the_delivery_counters(store: StatusStore, redis_conn: redis.Redis) -> None:
    counter = DeliveryCounter(redis_conn, "t")
    store.create(_event())
    counter.count_delivery("u1", Stage.EMBED)
    store.advance("u1", UploadStatus.INDEXED)
    assert counter.deliveries("u1", Stage.EMBED) == 0


def test_record_parses_from_bytes_replies(redis_url: str, store: StatusStore) -> None:
    store.create(_event())
    raw_client = redis_client(redis_url, decode_responses=False)
    raw = raw_client.hgetall("t:upload:u1")
    assert parse_record(raw).upload_id == "u1"  # type: ignore[arg-type]
    assert StatusStore(raw_client, "t").get("u1") == store.get("u1")


def test_wait_terminal_returns_finished_uploads_and_leaves_out_the_rest(store: StatusStore) -> None:
    for upload_id in ("done", "pending"):
        store.create(_event(upload_id))
    store.advance("done", UploadStatus.INDEXED)
    finished = store.wait_terminal(["done", "pending", "unknown"], timeout_s=0.3, poll_s=0.1)
    assert set(finished) == {"done"}
    assert finished["done"].status is UploadStatus.INDEXED


def test_wait_terminal_wakes_up_on_results_from_another_client(store: StatusStore, redis_url: str) -> None:
    ids = [f"u{n}" for n in range(20)]
    for upload_id in ids:
        store.create(_event(upload_id))
    worker_store = StatusStore(redis_client(redis_url), "t")
    started = threading.Event()

    def finish_all() -> None:
        started.wait()
        for n, upload_id in enumerate(ids):
            if n % 5 == 0:
                worker_store.fail(upload_id, Stage.EMBED, CorruptMedia("bad"))
            else:
                worker_store.advance(upload_id, UploadStatus.INDEXED)

    worker = threading.Thread(target=finish_all)
    worker.start()
    started.set()
    finished = store.wait_terminal(ids, timeout_s=60, poll_s=30)
    worker.join()
    assert set(finished) == set(ids)
    assert sum(r.status is UploadStatus.FAILED for r in finished.values()) == 4


def test_wait_terminal_falls_back_to_reading_records(store: StatusStore, redis_conn: redis.Redis) -> None:
    store.create(_event())

    def finish_without_a_visible_event() -> None:
        store.advance("u1", UploadStatus.INDEXED)
        redis_conn.delete("t:results")  # as if trimmed before the waiter read it

    timer = threading.Timer(0.2, finish_without_a_visible_event)
    timer.start()
    finished = store.wait_terminal(["u1"], timeout_s=60, poll_s=0.3)
    timer.join()
    assert finished["u1"].status is UploadStatus.INDEXED


def _race(url: str, upload_ids: list[str], worker: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    """Run in a child process: walk every upload through the pipeline, racing the others."""
    store = StatusStore(redis_client(url), "t")  # created after fork, as in a worker
    barrier.wait()
    for upload_id in upload_ids:
        for status in PIPELINE:
            if worker % 3 == 0 and status is UploadStatus.MODERATED:
                store.fail(upload_id, Stage.MODERATE, CorruptMedia(f"worker {worker}"))
            else:
                store.advance(upload_id, status)


def test_racing_workers_produce_exactly_one_result_per_upload(
    store: StatusStore, redis_url: str, redis_conn: redis.Redis
) -> None:
    ids = [f"race-{n}" for n in range(25)]
    for upload_id in ids:
        store.create(_event(upload_id))
    ctx = multiprocessing.get_context("fork")
    n_workers = 6
    barrier = ctx.Barrier(n_workers)
    processes = [ctx.Process(target=_race, args=(redis_url, ids, w, barrier)) for w in range(n_workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    results = ResultStream(redis_conn, "t").read(count=10_000)
    assert sorted(entry.result.upload_id for entry in results) == sorted(ids)
    records: list[StatusRecord] = [r for r in (store.get(i) for i in ids) if r is not None]
    assert all(record.terminal for record in records) and len(records) == len(ids)
    counts = store.counts()
    assert counts[UploadStatus.INDEXED] + counts[UploadStatus.FAILED] == len(ids)
    assert sum(counts.values()) == len(ids)
    for entry in results:
        assert entry.result.status is store.get(entry.result.upload_id).status  # type: ignore[union-attr]


def test_a_stage_overtaken_by_the_next_still_leaves_its_fields_on_the_record(
    store: StatusStore, redis_conn: redis.Redis
) -> None:
    # Each stage sends the next message before writing its own status, so under load the
    # embed (or index) stage can record first; the preprocess stage's advance, carrying the
    # sniffed modality and the object's etag, is then refused. The later stages repeat
    # those fields (workers.tasks.gpu / index), so the record and result event keep them.
    event = _event(modality=Modality.AUTO)
    store.create(event)
    sniffed = event.object.model_copy(update={"etag": '"abc"'}) if event.object else None
    assert store.advance("u1", UploadStatus.EMBEDDED, modality=Modality.AUDIO, object_ref=sniffed)
    assert not store.advance("u1", UploadStatus.PREPROCESSED, modality=Modality.AUDIO, object_ref=sniffed)
    assert store.advance("u1", UploadStatus.INDEXED, modality=Modality.AUDIO, object_ref=sniffed)
    record = store.get("u1")
    assert record is not None and record.modality is Modality.AUDIO
    assert record.object is not None and record.object.etag == '"abc"'
    (result,) = _results(redis_conn)
    assert result["modality"] == "audio"


def test_of_concurrent_submissions_of_one_id_exactly_one_starts_a_run(store: StatusStore, redis_url: str) -> None:
    submissions = 50
    barrier = threading.Barrier(submissions)
    starts = []

    def submit() -> None:
        own = StatusStore(redis_client(redis_url), "t")  # a connection each, as separate producers
        barrier.wait()
        starts.append(own.start_run(_event("twin", submitted_at=datetime.now(UTC))))

    threads = [threading.Thread(target=submit) for _ in range(submissions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(start.started for start in starts) == 1
    assert {(start.run, start.status) for start in starts} == {(1, UploadStatus.QUEUED)}
    store.advance("twin", UploadStatus.EMBEDDED)
    repeated = store.start_run(_event("twin", submitted_at=datetime.now(UTC)))
    assert (repeated.started, repeated.run, repeated.status) == (False, 1, UploadStatus.EMBEDDED)
    store.advance("twin", UploadStatus.INDEXED)
    assert store.start_run(_event("twin", submitted_at=datetime.now(UTC))).run == 2, "a finished run may be re-run"


def test_progress_is_stamped_by_redis_clock_so_a_skewed_worker_does_not_look_stalled(
    store: StatusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.status

    behind = datetime.now(UTC) - timedelta(seconds=30)
    monkeypatch.setattr(shared.status, "utcnow", lambda: behind)  # this worker's host is 30 s behind
    store.create(_event("skewed"))
    store.advance("skewed", UploadStatus.PREPROCESSED)
    # Another host's sweeper, 10 s stall timeout: stamped by the worker's clock it looked 30 s old.
    assert store.stalled(10) == []
    monkeypatch.setattr(time, "time", lambda: behind.timestamp())
    store.touch("skewed")
    assert store.stalled(10) == []
    assert [upload_id for upload_id, _ in store.stalled(0)] == ["skewed"]
