"""Entries no producer should ever send — deep nesting, huge, not UTF-8, not JSON — end as
exactly one dead letter each, with a reason, and are acknowledged: the bridge keeps going and
the next entry is ingested. (Before the limits, 100,000 nested brackets raised RecursionError
out of the bridge at every restart, the pending entry being re-read first.)"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from producers.bridge.minio_events import parse_notification
from producers.client import Client
from shared.config import Settings
from shared.errors import LimitExceeded
from shared.events import UploadStatus
from shared.json_limits import MAX_EVENT_BYTES
from shared.streams import DeadLetterStream
from tests.producers.bridge.conftest import queued_tasks
from tests.producers.bridge.minio_records import fixture
from tests.producers.bridge.test_list_consumer import EVENTS, minio_consumer
from tests.producers.bridge.test_list_consumer import poll_until_idle as poll_list
from tests.producers.bridge.test_stream_consumer import GROUP, STREAM, pending, stream_consumer
from tests.producers.bridge.test_stream_consumer import poll_until_idle as poll_stream

DEEP = "[" * 100_000 + "]" * 100_000
DEEP_EVENT = json.dumps({"text": "x", "metadata": json.loads("[" * 50 + "]" * 50)})
HUGE = json.dumps({"text": "x" * (MAX_EVENT_BYTES + 1)})
POISON: dict[str, tuple[bytes | str, str]] = {
    "deep brackets": (DEEP, "too_deep"),
    "deep brackets inside an event object": ('{"text": "x", "metadata": ' + DEEP + "}", "too_deep"),
    "nested past the depth limit": (DEEP_EVENT, "too_deep"),
    "over the size limit": (HUGE, "too_large"),
    "not UTF-8": (b'{"text": "\xff\xfe"}', "invalid_event"),
    "not JSON at all": ("<html>hello</html>", "invalid_event"),
}


def reasons(client: Client) -> list[str]:
    return [letter.reason for letter in DeadLetterStream(client.redis).entries()]


def test_every_malformed_stream_entry_ends_as_one_dead_letter_and_the_next_is_ingested(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    for raw, _ in POISON.values():
        redis_conn.xadd(STREAM, {"event": raw})
    redis_conn.xadd(STREAM, {"event": json.dumps({"id": "after-poison", "text": "fine"})})

    assert poll_stream(stream_consumer(bridge_settings(), client)) == len(POISON) + 1

    assert reasons(client) == [reason for _, reason in POISON.values()]
    record = client.status("after-poison")
    assert record is not None and record.status is UploadStatus.QUEUED
    assert queued_tasks(redis_conn, "cpu") == [("omnibind.preprocess", "<upload after-poison>")]
    assert pending(redis_conn) == 0


def test_a_poison_entry_pending_on_a_restarted_bridge_is_dead_lettered_not_fatal(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    settings = bridge_settings(consumer="bridge-1")
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    redis_conn.xadd(STREAM, {"event": DEEP})
    # Delivered to bridge-1, which died before acknowledging it: re-read first at its restart.
    redis_conn.xreadgroup(GROUP, "bridge-1", {STREAM: ">"})
    assert pending(redis_conn) == 1

    consumer = stream_consumer(settings, client)
    assert consumer.poll() == 1

    [letter] = DeadLetterStream(client.redis).entries()
    assert (letter.stage, letter.reason, letter.event) == ("ingest", "too_deep", DEEP)
    assert pending(redis_conn) == 0


def test_every_malformed_minio_notification_ends_as_one_dead_letter_and_leaves_the_lists(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    for raw, _ in POISON.values():
        redis_conn.rpush(EVENTS, raw)
    redis_conn.rpush(EVENTS, fixture("put_access.json"))
    consumer = minio_consumer(bridge_settings(), client)

    poll_list(consumer)

    assert reasons(client) == [reason for _, reason in POISON.values()]
    assert len(queued_tasks(redis_conn, "cpu")) == 1, "the notification after the poison ones is enqueued"
    assert redis_conn.llen(EVENTS) == 0 and redis_conn.llen(consumer.processing_key) == 0


def test_a_too_large_entry_s_dead_letter_keeps_only_its_start(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    redis_conn.xadd(STREAM, {"event": "x" * (8 * MAX_EVENT_BYTES)})

    poll_stream(stream_consumer(bridge_settings(), client))

    [letter] = DeadLetterStream(client.redis).entries()
    assert letter.reason == "too_large" and len(letter.event) <= MAX_EVENT_BYTES


def test_parse_notification_refuses_deep_nesting_with_a_reason() -> None:
    with pytest.raises(LimitExceeded) as refused:
        parse_notification('{"Records": ' + DEEP + "}")
    assert refused.value.reason == "too_deep"
