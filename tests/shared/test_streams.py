from __future__ import annotations

import json

import pytest
import redis

from shared.errors import CorruptMedia
from shared.events import Stage, UploadEvent, UploadStatus
from shared.status import RESULT_STREAM_VERSION, StatusStore
from shared.streams import DeadLetterStream, DeliveryCounter, ResultStream


@pytest.fixture
def store(redis_conn: redis.Redis) -> StatusStore:
    return StatusStore(redis_conn, "t", results_maxlen=1000)


@pytest.fixture
def results(redis_conn: redis.Redis) -> ResultStream:
    return ResultStream(redis_conn, "t")


@pytest.fixture
def dead(redis_conn: redis.Redis) -> DeadLetterStream:
    return DeadLetterStream(redis_conn, "t")


def _finish(store: StatusStore, upload_id: str, *, fail: bool = False) -> None:
    store.create(UploadEvent(id=upload_id, text="hello"))
    if fail:
        store.fail(upload_id, Stage.EMBED, CorruptMedia("bad"))
    else:
        store.advance(upload_id, UploadStatus.INDEXED)


# -- results -------------------------------------------------------------------------------


def test_reading_after_the_last_id_sees_only_new_results(store: StatusStore, results: ResultStream) -> None:
    assert results.last_id() == "0-0"
    _finish(store, "old")
    position = results.last_id()
    _finish(store, "new", fail=True)
    entries = results.read(position)
    assert [(e.result.upload_id, e.result.status) for e in entries] == [("new", UploadStatus.FAILED)]
    assert entries[0].result.error_reason == "corrupt_media"
    assert [e.result.upload_id for e in results.read()] == ["old", "new"]


def test_blocking_read_returns_empty_on_timeout(results: ResultStream) -> None:
    assert results.read(results.last_id(), block_ms=50) == []


def test_consumer_group_shares_entries_and_redelivers_unacknowledged(store: StatusStore, results: ResultStream) -> None:
    results.ensure_group("webhooks")
    results.ensure_group("webhooks")  # idempotent
    for n in range(4):
        _finish(store, f"u{n}")
    first = results.read_group("webhooks", "a", count=2)
    second = results.read_group("webhooks", "b", count=10)
    assert [e.result.upload_id for e in first + second] == ["u0", "u1", "u2", "u3"]
    assert results.read_group("webhooks", "a", block_ms=20) == []
    results.ack("webhooks", first[0].entry_id)
    # consumer "a" crashed before acknowledging u1: it gets it again from its pending list
    assert [e.result.upload_id for e in results.read_group("webhooks", "a", pending=True)] == ["u1"]
    assert results.ack("webhooks", first[1].entry_id, *(e.entry_id for e in second)) == 3
    assert results.read_group("webhooks", "b", pending=True) == []


def test_group_started_at_dollar_skips_history(store: StatusStore, results: ResultStream) -> None:
    _finish(store, "before")
    results.ensure_group("live", start_id="$")
    _finish(store, "after")
    assert [e.result.upload_id for e in results.read_group("live", "c")] == ["after"]


def test_pending_entries_trimmed_from_the_stream_are_acknowledged(
    store: StatusStore, results: ResultStream, redis_conn: redis.Redis
) -> None:
    results.ensure_group("g")
    _finish(store, "u1")
    [entry] = results.read_group("g", "a")
    redis_conn.xdel("t:results", entry.entry_id)
    assert results.read_group("g", "a", pending=True) == []
    assert redis_conn.xpending("t:results", "g")["pending"] == 0  # type: ignore[index]


def test_results_stream_entry_format_is_the_documented_one(store: StatusStore, redis_conn: redis.Redis) -> None:
    _finish(store, "u1", fail=True)
    [(_entry_id, fields)] = redis_conn.xrange("t:results")  # type: ignore[misc]
    assert set(fields) == {
        "v",
        "upload_id",
        "status",
        "run",
        "at",
        "flagged",
        "categories",
        "error_reason",
        "error",
        "result",
    }
    assert fields["v"] == RESULT_STREAM_VERSION
    doc = json.loads(fields["result"])
    assert set(doc) == {
        "upload_id",
        "status",
        "modality",
        "object",
        "flagged",
        "categories",
        "error_reason",
        "error",
        "transcript",
        "at",
    }
    assert doc["transcript"] is None  # only audio (and video sound) has one
    assert doc["at"] == fields["at"] and doc["at"].endswith("Z")


# -- dead letters --------------------------------------------------------------------------


def test_dead_letters_can_be_listed_read_and_deleted(dead: DeadLetterStream) -> None:
    event = UploadEvent(id="u1", text="hello").model_dump_json()
    first = dead.dead_letter(event, Stage.EMBED, "CorruptMedia", "corrupt_media", "bad bytes", 1)
    second = dead.dead_letter('{"id": "u2"}', "preprocess", "WorkerLost", "poison", "killed its worker", 5)
    assert dead.length() == 2
    letters = dead.entries()
    assert [letter.entry_id for letter in letters] == [first, second]
    assert letters[0].upload_id == "u1" and letters[0].stage == "embed" and letters[0].event == event
    assert (letters[1].reason, letters[1].attempts, letters[1].upload_id) == ("poison", 5, "u2")
    assert [letter.entry_id for letter in dead.entries(newest_first=True)] == [second, first]
    assert [letter.entry_id for letter in dead.entries(start=second)] == [second]
    letter = dead.get(first)
    assert letter is not None and letter.message == "bad bytes" and letter.at.tzinfo is not None
    assert dead.delete(first)
    assert not dead.delete(first)
    assert dead.get(first) is None
    assert dead.length() == 1


def test_dead_letter_keeps_an_unparseable_event_as_is(dead: DeadLetterStream) -> None:
    entry_id = dead.dead_letter("{not json", "ingest", "InvalidEvent", "invalid_event", "not JSON", 1)
    letter = dead.get(entry_id)
    assert letter is not None and letter.upload_id is None and letter.event == "{not json"


def test_dead_letter_upload_id_can_be_given_explicitly(dead: DeadLetterStream) -> None:
    entry_id = dead.dead_letter("{}", Stage.INDEX, "X", "x", "m" * 10_000, 2, upload_id="given")
    letter = dead.get(entry_id)
    assert letter is not None and letter.upload_id == "given" and len(letter.message) == 4000


# -- delivery counters ---------------------------------------------------------------------


def test_deliveries_are_counted_per_upload_and_stage(redis_conn: redis.Redis) -> None:
    counter = DeliveryCounter(redis_conn, "t", ttl_s=600)
    assert [counter.count_delivery("u1", Stage.EMBED) for _ in range(3)] == [1, 2, 3]
    assert counter.count_delivery("u1", Stage.INDEX) == 1
    assert counter.count_delivery("u2", Stage.EMBED) == 1
    assert counter.deliveries("u1", Stage.EMBED) == 3
    assert 590 <= redis_conn.ttl("t:deliveries:u1") <= 600  # type: ignore[operator]


def test_resetting_deliveries_of_one_stage_or_all(redis_conn: redis.Redis) -> None:
    counter = DeliveryCounter(redis_conn, "t")
    counter.count_delivery("u1", Stage.EMBED)
    counter.count_delivery("u1", Stage.INDEX)
    counter.reset_deliveries("u1", Stage.EMBED)
    assert counter.deliveries("u1", Stage.EMBED) == 0
    assert counter.deliveries("u1", Stage.INDEX) == 1
    counter.reset_deliveries("u1")
    assert counter.deliveries("u1", Stage.INDEX) == 0
