"""The dead-letter re-drive against a real redis-server: transient letters are sent again once
their dependency answers, at most `max_redrives` times per upload; other letters stay."""

from __future__ import annotations

import pytest
import redis

from shared.errors import StorageUnavailable
from shared.events import Stage, UploadEvent, UploadStatus
from shared.status import StatusStore
from shared.streams import DeadLetterStream
from workers.redrive import OBJECTS, Redriver

PREFIX = "t"


class Storage:
    """A probe whose answer the test decides."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    def __call__(self, _event: UploadEvent) -> None:
        self.probes += 1
        if not self.up:
            raise StorageUnavailable("connection refused")


@pytest.fixture
def store(redis_conn: redis.Redis) -> StatusStore:
    return StatusStore(redis_conn, PREFIX)


@pytest.fixture
def dead(redis_conn: redis.Redis) -> DeadLetterStream:
    return DeadLetterStream(redis_conn, PREFIX)


def failed_upload(store: StatusStore, upload_id: str, error: Exception) -> UploadEvent:
    event = UploadEvent(id=upload_id, text=f"text of {upload_id}")
    assert store.create(event)
    assert store.fail(upload_id, Stage.PREPROCESS, error, dead_letter=event.model_dump_json(), attempts=3)
    return event


def make_redriver(
    redis_conn: redis.Redis, store: StatusStore, dead: DeadLetterStream, sent: list[UploadEvent], storage: Storage
) -> Redriver:
    return Redriver(redis_conn, store, dead, sent.append, prefix=PREFIX, max_redrives=2, probes={OBJECTS: storage})


def one_pass(redriver: Redriver, redis_conn: redis.Redis) -> list[str]:
    redis_conn.delete(f"{PREFIX}:dead:redrive-lock")
    return redriver.redrive(lock_ms=1000, me="test").redriven


def test_a_transient_letter_waits_for_its_dependency_then_is_sent_once(
    redis_conn: redis.Redis, store: StatusStore, dead: DeadLetterStream
) -> None:
    sent: list[UploadEvent] = []
    storage = Storage()
    redriver = make_redriver(redis_conn, store, dead, sent, storage)
    event = failed_upload(store, "down", StorageUnavailable("connection refused"))
    failed_upload(store, "bad", ValueError("corrupt"))  # internal_error: never re-driven

    assert one_pass(redriver, redis_conn) == []
    assert dead.length() == 2
    storage.up = True
    assert one_pass(redriver, redis_conn) == ["down"]
    assert one_pass(redriver, redis_conn) == []

    assert sent == [event]
    assert [letter.upload_id for letter in dead.entries()] == ["bad"]
    record = store.get("down")
    assert record is not None and record.status is UploadStatus.QUEUED and record.run == 2
    assert redriver.redrives("down") == 1


def test_an_upload_is_redriven_at_most_max_redrives_times(
    redis_conn: redis.Redis, store: StatusStore, dead: DeadLetterStream
) -> None:
    sent: list[UploadEvent] = []
    storage = Storage()
    storage.up = True
    redriver = make_redriver(redis_conn, store, dead, sent, storage)
    failed_upload(store, "flaky", StorageUnavailable("connection refused"))
    for _ in range(3):  # it fails again after each re-drive
        one_pass(redriver, redis_conn)
        if store.get("flaky").status is UploadStatus.QUEUED:  # type: ignore[union-attr]
            store.fail("flaky", Stage.PREPROCESS, StorageUnavailable("again"), dead_letter=sent[-1].model_dump_json())

    assert len(sent) == 2
    assert redriver.redrives("flaky") == 2
    assert [letter.upload_id for letter in dead.entries()] == ["flaky"], "left for a human"


def test_only_the_lock_holder_redrives(redis_conn: redis.Redis, store: StatusStore, dead: DeadLetterStream) -> None:
    sent: list[UploadEvent] = []
    storage = Storage()
    storage.up = True
    redriver = make_redriver(redis_conn, store, dead, sent, storage)
    failed_upload(store, "down", StorageUnavailable("connection refused"))
    redis_conn.set(f"{PREFIX}:dead:redrive-lock", "another worker", px=10_000)

    assert redriver.redrive(lock_ms=1000, me="test").redriven == []
    assert sent == []
