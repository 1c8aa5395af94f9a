"""A failure and its dead letter are one step: a failed upload always has exactly one dead
letter, and a failure that is refused (a stale redelivery) writes none."""

from __future__ import annotations

import redis

from shared.errors import StorageUnavailable
from shared.events import Stage, UploadEvent, UploadStatus
from shared.status import StatusStore
from shared.streams import DeadLetterStream


def test_a_failure_writes_its_dead_letter_in_the_same_step(redis_conn: redis.Redis) -> None:
    store, dead = StatusStore(redis_conn, "t"), DeadLetterStream(redis_conn, "t")
    event = UploadEvent(id="u1", text="hello")
    store.create(event)

    assert store.fail("u1", Stage.EMBED, StorageUnavailable("down"), dead_letter=event.model_dump_json(), attempts=4)

    [letter] = dead.entries()
    assert (letter.upload_id, letter.stage, letter.error_class, letter.reason, letter.message, letter.attempts) == (
        "u1",
        "embed",
        "StorageUnavailable",
        "storage_unavailable",
        "down",
        4,
    )
    assert UploadEvent.model_validate_json(letter.event) == event
    record = store.get("u1")
    assert record is not None and record.status is UploadStatus.FAILED


def test_a_refused_failure_writes_no_dead_letter(redis_conn: redis.Redis) -> None:
    store, dead = StatusStore(redis_conn, "t"), DeadLetterStream(redis_conn, "t")
    store.create(UploadEvent(id="u1", text="hello"))
    store.advance("u1", UploadStatus.EMBEDDED)

    stale = store.fail("u1", Stage.PREPROCESS, StorageUnavailable("old news"), dead_letter="{}")
    store.advance("u1", UploadStatus.INDEXED)
    late = store.fail("u1", Stage.INDEX, StorageUnavailable("too late"), dead_letter="{}")

    assert not stale and not late
    assert dead.length() == 0
