from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producers.bridge.enqueue import Ingestor, Outcome
from producers.bridge.service import build_consumers, raw_redis
from producers.bridge.stream_consumer import IngestStreamConsumer
from producers.bridge.stream_events import event_from_entry
from producers.bridge.stream_group import StreamGroup
from producers.client import Client
from shared.config import Settings
from shared.events import UploadEvent, UploadStatus
from shared.redis_client import RedisUnavailable
from shared.streams import DeadLetterStream
from tests.producers.bridge.conftest import queued_tasks

STREAM = "omnibind:ingest"
GROUP = "omnibind-bridge"


def stream_consumer(settings: Settings, client: Client, *, ingestor: Ingestor | None = None) -> IngestStreamConsumer:
    (consumer,) = build_consumers(settings, client, raw_redis(settings), stream=True, minio=False)
    assert isinstance(consumer, IngestStreamConsumer)
    if ingestor is not None:
        consumer._ingestor = ingestor
    consumer.start()
    return consumer


def poll_until_idle(consumer: IngestStreamConsumer) -> int:
    """Poll until a poll finds nothing (after waiting `block_s`); returns how much was handled."""
    handled = 0
    while n := consumer.poll():
        handled += n
    return handled


def pending(conn: redis.Redis) -> int:
    summary: Any = conn.xpending(STREAM, GROUP)
    return int(summary["pending"])


def add(conn: redis.Redis, event: dict[str, Any] | str) -> str:
    text = event if isinstance(event, str) else json.dumps(event)
    return str(conn.xadd(STREAM, {"event": text}))


def test_valid_events_are_enqueued_and_acknowledged_and_invalid_ones_dead_lettered(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    named = add(redis_conn, {"id": "cms-1", "text": "a red bicycle", "source": "cms"})
    anonymous = add(redis_conn, {"object": {"bucket": "uploads", "key": "photos/cat.jpg"}})
    invalid = add(redis_conn, {"text": "x", "object": {"bucket": "uploads", "key": "k"}})
    redis_conn.xadd(STREAM, {"payload": "no event field"})

    assert poll_until_idle(stream_consumer(bridge_settings(), client)) == 4

    assert named != anonymous != invalid
    first = client.status("cms-1")
    second = client.status(f"stream-{anonymous}")
    assert first is not None and first.status is UploadStatus.QUEUED and first.source == "cms"
    assert second is not None and second.object is not None and second.object.key == "photos/cat.jpg"
    assert queued_tasks(redis_conn, "cpu") == [
        ("omnibind.preprocess", "<upload cms-1>"),
        ("omnibind.preprocess", f"<upload stream-{anonymous}>"),
    ]
    dead = DeadLetterStream(client.redis).entries()
    assert [(d.stage, d.reason) for d in dead] == [("ingest", "invalid_event")] * 2
    assert invalid in dead[0].message and "exactly one of" in dead[0].message
    assert json.loads(dead[0].event)["object"]["key"] == "k", "the event is kept as it came, to re-add it"
    assert "no 'event' field" in dead[1].message
    assert pending(redis_conn) == 0


def test_events_added_before_the_first_bridge_started_are_ingested(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    add(redis_conn, {"id": "early", "text": "queued before any bridge ran"})
    poll_until_idle(stream_consumer(bridge_settings(), client))
    assert client.status("early") is not None


@pytest.mark.parametrize("worker_started", [True, False])
def test_an_entry_delivered_again_after_a_crash_is_not_a_second_upload(
    bridge_settings: Callable[..., Settings],
    client: Client,
    redis_conn: redis.Redis,
    worker_started: bool,
) -> None:
    settings = bridge_settings(consumer="bridge-1")
    entry_id = add(redis_conn, {"text": "crash test"})
    # The bridge reads and enqueues the entry, then dies before XACK.
    StreamGroup(raw_redis(settings), STREAM, GROUP, "bridge-1").ensure("0")
    ((read_id, fields),) = StreamGroup(raw_redis(settings), STREAM, GROUP, "bridge-1").read_new(10, None)
    event = event_from_entry(read_id, {k.decode(): v.decode() for k, v in fields.items()})  # type: ignore[union-attr]
    assert Ingestor(client).ingest(event) is Outcome.ENQUEUED
    if worker_started:
        client.statuses.advance(event.id, UploadStatus.PREPROCESSED)

    poll_until_idle(stream_consumer(settings, client))  # the restarted bridge, same consumer name

    record = client.status(f"stream-{entry_id}")
    assert record is not None and record.run == 1
    # A run a worker has moved on is not sent again; one still queued may have lost its message
    # in the crash (it died between recording the run and sending), so it is sent once more.
    assert len(queued_tasks(redis_conn, "cpu")) == (1 if worker_started else 2)
    assert pending(redis_conn) == 0


def test_entries_a_dead_bridge_left_pending_are_taken_over(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    settings = bridge_settings(consumer="survivor", reclaim_idle_s=0.3)
    group = StreamGroup(raw_redis(settings), STREAM, GROUP, "dead-bridge")
    group.ensure("0")
    entry_id = add(redis_conn, {"text": "left behind"})
    assert len(group.read_new(10, None)) == 1  # delivered to the dead bridge, never acknowledged
    time.sleep(0.5)  # the entry idles past reclaim_idle_s (0.3 s): a clock, not a wait

    poll_until_idle(stream_consumer(settings, client))

    assert client.status(f"stream-{entry_id}") is not None
    assert pending(redis_conn) == 0


class FlakyIngestor(Ingestor):
    """Fails in a chosen way for chosen upload ids (fault injection around a real Ingestor)."""

    def __init__(self, client: Client, failures: dict[str, list[Exception]]) -> None:
        super().__init__(client)
        self.failures = failures

    def ingest(self, event: UploadEvent) -> Outcome:
        planned = self.failures.get(event.id)
        if planned:
            raise planned.pop(0)
        return super().ingest(event)


def test_a_broker_outage_keeps_the_entry_pending_until_a_later_poll_succeeds(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    add(redis_conn, {"id": "flaky", "text": "x"})
    ingestor = FlakyIngestor(client, {"flaky": [RedisUnavailable("broker down")]})
    consumer = stream_consumer(bridge_settings(), client, ingestor=ingestor)

    with pytest.raises(RedisUnavailable):
        poll_until_idle(consumer)
    assert pending(redis_conn) == 1 and client.status("flaky") is None

    poll_until_idle(consumer)
    assert client.status("flaky") is not None and pending(redis_conn) == 0


def test_an_unexpected_error_dead_letters_that_entry_and_the_stream_moves_on(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    add(redis_conn, {"id": "buggy", "text": "x"})
    add(redis_conn, {"id": "fine", "text": "y"})
    ingestor = FlakyIngestor(client, {"buggy": [RuntimeError("a bug")]})

    poll_until_idle(stream_consumer(bridge_settings(), client, ingestor=ingestor))

    assert client.status("fine") is not None
    (dead,) = DeadLetterStream(client.redis).entries()
    assert (dead.upload_id, dead.reason) == ("buggy", "internal_error")
    assert "RuntimeError: a bug" in dead.message
    assert pending(redis_conn) == 0


def test_handled_entries_are_trimmed_but_not_those_another_group_still_needs(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    settings = bridge_settings()
    for n in range(5):
        add(redis_conn, {"id": f"t{n}", "text": "x"})
    poll_until_idle(stream_consumer(settings, client))
    assert redis_conn.xlen(STREAM) <= 1, "only the last handled entry may stay (it marks the position)"

    redis_conn.xgroup_create(STREAM, "audit", id="$")  # another program starts reading here
    for n in range(5, 8):
        add(redis_conn, {"id": f"t{n}", "text": "x"})
    auditor = StreamGroup(raw_redis(settings), STREAM, "audit", "auditor")
    assert len(auditor.read_new(1, None)) == 1  # it read one and has not acknowledged it
    bridge = stream_consumer(settings, client)
    bridge._next_trim_s = 0.0
    poll_until_idle(bridge)

    assert redis_conn.xlen(STREAM) == 3, "everything from the auditor's unacknowledged entry on is kept"
