"""The stall sweeper against a real redis-server: it sends again exactly the uploads whose
message exists nowhere, and leaves alone those still queued or held by a worker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis

from producers.client import Client
from shared.config import Settings
from shared.deletions import DELETION_HEADER, PendingDeletions
from shared.events import DeleteRequest, UploadEvent, UploadStatus
from shared.queue import SENT_MS_HEADER, UPLOAD_HEADER, QueueName
from shared.status import StatusStore
from workers.sweeper import LostMessage, StallSweeper

PREFIX = "t"
STALL_S = 60.0


@pytest.fixture
def store(redis_conn: redis.Redis) -> StatusStore:
    return StatusStore(redis_conn, PREFIX)


@pytest.fixture
def sent() -> list[UploadEvent]:
    return []


@pytest.fixture
def sweeper(redis_conn: redis.Redis, store: StatusStore, sent: list[UploadEvent]) -> StallSweeper:
    return StallSweeper(redis_conn, store, sent.append, prefix=PREFIX, stall_timeout_s=STALL_S, interval_s=0.01)


def _now_ms() -> int:
    return int(time.time() * 1000)


def queued_upload(store: StatusStore, redis_conn: redis.Redis, upload_id: str, *, idle_s: float) -> UploadEvent:
    """An upload recorded as queued whose last progress was `idle_s` ago."""
    event = UploadEvent(id=upload_id, text=f"text of {upload_id}")
    assert store.create(event)
    redis_conn.zadd(store.keys.inflight, {upload_id: _now_ms() - int(idle_s * 1000)})
    return event


def envelope(upload_id: str, sent_ms: int | None) -> dict[str, object]:
    """A kombu message envelope as it sits in a queue list."""
    headers: dict[str, object] = {"task": "omnibind.preprocess", "argsrepr": f"<upload {upload_id}>"}
    if sent_ms is not None:
        headers |= {UPLOAD_HEADER: upload_id, SENT_MS_HEADER: sent_ms}
    return {"body": "", "content-type": "application/x-msgpack", "headers": headers, "properties": {}}


def test_a_stalled_upload_whose_message_is_nowhere_is_sent_again_once(
    sweeper: StallSweeper, store: StatusStore, redis_conn: redis.Redis, sent: list[UploadEvent]
) -> None:
    event = queued_upload(store, redis_conn, "lost", idle_s=2 * STALL_S)
    queued_upload(store, redis_conn, "fresh", idle_s=1)

    assert sweeper.sweep() == ["lost"]
    assert sent == [event]
    time.sleep(0.02)  # the sweep lock lasts 90 % of the interval
    assert sweeper.sweep() == [], "its progress was noted: not again before the stall timeout"


def test_an_upload_whose_message_may_wait_behind_older_messages_is_left_alone(
    sweeper: StallSweeper, store: StatusStore, redis_conn: redis.Redis
) -> None:
    queued_upload(store, redis_conn, "waiting", idle_s=2 * STALL_S)
    older = _now_ms() - int(3 * STALL_S * 1000)
    redis_conn.lpush(f"{PREFIX}:cpu", json.dumps(envelope("someone-else", older)))

    assert sweeper.sweep() == []


def test_a_queue_whose_oldest_message_is_newer_than_the_stall_does_not_hide_a_lost_upload(
    sweeper: StallSweeper, store: StatusStore, redis_conn: redis.Redis
) -> None:
    queued_upload(store, redis_conn, "lost", idle_s=2 * STALL_S)
    redis_conn.lpush(f"{PREFIX}:gpu", json.dumps(envelope("newer", _now_ms())))

    assert sweeper.sweep() == ["lost"]


def test_a_message_sent_just_after_the_progress_it_follows_is_still_waited_for(
    sweeper: StallSweeper, store: StatusStore, redis_conn: redis.Redis
) -> None:
    # A stage records its progress, then sends the next stage's message: that message's
    # send time lies a few milliseconds after the upload's last progress.
    queued_upload(store, redis_conn, "behind", idle_s=2 * STALL_S)
    progress_ms = int(redis_conn.zscore(store.keys.inflight, "behind") or 0)
    redis_conn.lpush(f"{PREFIX}:gpu", json.dumps(envelope("behind", progress_ms + 30)))

    assert sweeper.sweep() == []


def test_a_queued_message_without_a_send_time_is_taken_as_possibly_older(
    sweeper: StallSweeper, store: StatusStore, redis_conn: redis.Redis
) -> None:
    queued_upload(store, redis_conn, "unsure", idle_s=2 * STALL_S)
    redis_conn.lpush(f"{PREFIX}:cpu", json.dumps(envelope("legacy", None)))

    assert sweeper.sweep() == []


def test_an_upload_held_by_a_worker_is_left_alone(
    sweeper: StallSweeper, store: StatusStore, redis_conn: redis.Redis
) -> None:
    queued_upload(store, redis_conn, "held", idle_s=2 * STALL_S)
    queued_upload(store, redis_conn, "held-by-argsrepr", idle_s=2 * STALL_S)
    redis_conn.hset(f"{PREFIX}:unacked", "tag-1", json.dumps([envelope("held", _now_ms()), "", "cpu"]))
    redis_conn.hset(f"{PREFIX}:unacked", "tag-2", json.dumps([envelope("held-by-argsrepr", None), "", "cpu"]))

    assert sweeper.sweep() == []


def test_a_lost_upload_without_a_kept_event_fails_with_a_reason(
    sweeper: StallSweeper, store: StatusStore, redis_conn: redis.Redis, sent: list[UploadEvent]
) -> None:
    queued_upload(store, redis_conn, "old-record", idle_s=2 * STALL_S)
    redis_conn.hdel(store.keys.upload("old-record"), "event")  # as written before events were kept

    assert sweeper.sweep() == []
    record = store.get("old-record")
    assert record is not None and record.status is UploadStatus.FAILED
    assert record.error_reason == LostMessage.reason and not sent


def test_finished_uploads_leave_the_in_flight_index_and_drop_their_event(
    store: StatusStore, redis_conn: redis.Redis
) -> None:
    event = queued_upload(store, redis_conn, "u", idle_s=0)
    assert store.pending_event("u") == event

    store.advance("u", UploadStatus.INDEXED)

    assert redis_conn.zscore(store.keys.inflight, "u") is None
    assert store.pending_event("u") is None
    assert store.requeue("u", event)
    assert store.pending_event("u") == event
    assert redis_conn.zscore(store.keys.inflight, "u") is not None


def test_only_one_process_sweeps_per_interval(
    redis_conn: redis.Redis, store: StatusStore, sent: list[UploadEvent]
) -> None:
    queued_upload(store, redis_conn, "lost", idle_s=2 * STALL_S)
    first, second = (
        StallSweeper(redis_conn, store, sent.append, prefix=PREFIX, stall_timeout_s=STALL_S, interval_s=60)
        for _ in range(2)
    )

    assert first.sweep() == ["lost"]
    queued_upload(store, redis_conn, "lost-too", idle_s=2 * STALL_S)
    assert second.sweep() == [], "the first one holds the lock for this interval"


@pytest.fixture
def sent_deletions() -> list[tuple[DeleteRequest, str]]:
    return []


@pytest.fixture
def deletion_sweeper(
    redis_conn: redis.Redis,
    store: StatusStore,
    sent: list[UploadEvent],
    sent_deletions: list[tuple[DeleteRequest, str]],
) -> StallSweeper:
    return StallSweeper(
        redis_conn,
        store,
        sent.append,
        prefix=PREFIX,
        stall_timeout_s=STALL_S,
        interval_s=0.01,
        send_delete=lambda request, token: sent_deletions.append((request, token)),
    )


def pending_deletion(redis_conn: redis.Redis, upload_id: str, *, idle_s: float) -> tuple[DeleteRequest, str]:
    """A deletion recorded as pending whose last progress was `idle_s` ago."""
    request = DeleteRequest(upload_id=upload_id)
    deletions = PendingDeletions(redis_conn, PREFIX)
    token = deletions.record(request)
    redis_conn.zadd(deletions.keys.deletions_inflight, {token: _now_ms() - int(idle_s * 1000)})
    return request, token


def test_a_stalled_deletion_whose_message_is_nowhere_is_sent_again_once(
    deletion_sweeper: StallSweeper, redis_conn: redis.Redis, sent_deletions: list[tuple[DeleteRequest, str]]
) -> None:
    lost = pending_deletion(redis_conn, "gone", idle_s=2 * STALL_S)
    pending_deletion(redis_conn, "just-sent", idle_s=1)

    assert deletion_sweeper.sweep() == [lost[1]]
    assert sent_deletions == [lost]
    time.sleep(0.02)  # the sweep lock lasts 90 % of the interval
    assert deletion_sweeper.sweep() == [], "its progress was noted: not again before the stall timeout"


def test_a_deletion_held_by_a_worker_or_done_is_left_alone(
    deletion_sweeper: StallSweeper, redis_conn: redis.Redis, sent_deletions: list[tuple[DeleteRequest, str]]
) -> None:
    _, held = pending_deletion(redis_conn, "held", idle_s=2 * STALL_S)
    _, finished = pending_deletion(redis_conn, "finished", idle_s=2 * STALL_S)
    message = envelope("unused", _now_ms()) | {"headers": {DELETION_HEADER: held, SENT_MS_HEADER: _now_ms()}}
    redis_conn.hset(f"{PREFIX}:unacked", "tag-1", json.dumps([message, "", "index"]))
    PendingDeletions(redis_conn, PREFIX).done(finished)

    assert deletion_sweeper.sweep() == []
    assert sent_deletions == []


def test_messages_celery_published_are_read_where_they_sit(
    sweeper: StallSweeper,
    store: StatusStore,
    redis_conn: redis.Redis,
    redis_url: str,
    make_settings: Callable[..., Settings],
    sent: list[UploadEvent],
) -> None:
    # Envelopes as Celery's send_task and kombu's Redis transport write them, not built by
    # hand: one taken by a consumer (in kombu's unacked hash) and one waiting in the queue,
    # sent long after the stalled uploads' last progress.
    lost = queued_upload(store, redis_conn, "lost", idle_s=2 * STALL_S)
    held = queued_upload(store, redis_conn, "held", idle_s=2 * STALL_S)
    with Client(make_settings(redis_url=redis_url, queue_prefix=PREFIX), source="test") as client:
        client.send_to_pipeline(held)
        with client.celery.connection_for_read() as connection:
            taken = connection.default_channel.basic_get(QueueName.CPU.value, no_ack=False)
            assert taken is not None and taken.headers[UPLOAD_HEADER] == "held"
            assert redis_conn.hlen(f"{PREFIX}:unacked") == 1
            client.send_to_pipeline(UploadEvent(id="newer", text="sent just now"))
            assert redis_conn.llen(f"{PREFIX}:{QueueName.CPU.value}") == 1

            assert sweeper.sweep() == ["lost"]
    assert sent == [lost]
