from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from producers.bridge.enqueue import Ingestor, Outcome
from producers.bridge.list_consumer import MinioEventsConsumer
from producers.bridge.minio_events import minio_upload_id
from producers.bridge.service import build_consumers, raw_redis
from producers.client import Client
from shared.config import Settings
from shared.events import UploadEvent, UploadStatus
from shared.redis_client import RedisUnavailable
from shared.streams import DeadLetterStream
from tests.producers.bridge.conftest import queued_tasks
from tests.producers.bridge.minio_records import access_element, fixture, record

EVENTS = "omnibind:minio:events"
KEY = "photos/summer 2024/café ☕.jpg"


def minio_consumer(settings: Settings, client: Client, *, ingestor: Ingestor | None = None) -> MinioEventsConsumer:
    (consumer,) = build_consumers(settings, client, raw_redis(settings), stream=False, minio=True)
    assert isinstance(consumer, MinioEventsConsumer)
    if ingestor is not None:
        consumer._ingestor = ingestor
    consumer.start()
    return consumer


def poll_until_idle(consumer: MinioEventsConsumer) -> None:
    consumer.poll()  # the first poll handles what a previous run left on the processing list
    while consumer.poll():
        pass


def test_a_put_notification_is_enqueued_with_its_decoded_key_and_leaves_no_trace(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    redis_conn.rpush(EVENTS, fixture("put_access.json"))
    consumer = minio_consumer(bridge_settings(), client)

    poll_until_idle(consumer)

    upload_id = minio_upload_id("uploads", KEY)
    status = client.status(upload_id)
    assert status is not None and status.status is UploadStatus.QUEUED
    assert status.source == "minio"
    assert status.object is not None and (status.object.bucket, status.object.key) == ("uploads", KEY)
    assert queued_tasks(redis_conn, "cpu") == [("omnibind.preprocess", f"<upload {upload_id}>")]
    assert redis_conn.llen(EVENTS) == 0 and redis_conn.llen(consumer.processing_key) == 0


def test_what_a_dead_bridge_left_on_its_processing_list_is_handled_at_start(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    settings = bridge_settings(consumer="bridge-1")
    processing = f"{EVENTS}:processing:bridge-1"
    # Moved off MinIO's list by a bridge that died before enqueueing it.
    redis_conn.rpush(processing, access_element(record("s3:ObjectCreated:Put", "uploads", "left behind.png")))

    poll_until_idle(minio_consumer(settings, client))

    assert client.status(minio_upload_id("uploads", "left behind.png")) is not None
    assert redis_conn.llen(processing) == 0


def test_the_same_notification_twice_is_one_upload(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    redis_conn.rpush(EVENTS, fixture("put_access.json"))
    consumer = minio_consumer(bridge_settings(), client)
    poll_until_idle(consumer)
    client.statuses.advance(minio_upload_id("uploads", KEY), UploadStatus.PREPROCESSED)  # a worker took it

    redis_conn.rpush(EVENTS, fixture("put_access.json"))  # MinIO replays it (queue_dir)
    poll_until_idle(consumer)

    assert len(queued_tasks(redis_conn, "cpu")) == 1
    status = client.status(minio_upload_id("uploads", KEY))
    assert status is not None and status.run == 1


def test_a_removal_sends_the_delete_task_and_a_tag_change_sends_nothing(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    redis_conn.rpush(EVENTS, access_element(record("s3:ObjectCreated:PutTagging", "uploads", KEY, size=3, etag="e")))
    redis_conn.rpush(EVENTS, fixture("delete_access.json"))

    poll_until_idle(minio_consumer(bridge_settings(), client))

    assert queued_tasks(redis_conn, "cpu") == []
    assert queued_tasks(redis_conn, "index") == [("omnibind.delete", f"<delete {minio_upload_id('uploads', KEY)}>")]


def test_removals_are_ignored_when_record_deletion_is_off(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    redis_conn.rpush(EVENTS, fixture("delete_access.json"))
    poll_until_idle(minio_consumer(bridge_settings(minio_delete_records=False), client))
    assert queued_tasks(redis_conn, "index") == []


def test_unreadable_notifications_are_dead_lettered_and_the_list_moves_on(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    broken = record("s3:ObjectCreated:Put", "uploads", "x.jpg")
    del broken["eventTime"]
    redis_conn.rpush(EVENTS, b"\xff not json", access_element(broken), fixture("put_access.json"))
    consumer = minio_consumer(bridge_settings(), client)

    poll_until_idle(consumer)

    dead = DeadLetterStream(client.redis).entries()
    assert [(d.stage, d.reason) for d in dead] == [("ingest", "invalid_event")] * 2
    assert "not valid JSON" in dead[0].message and "eventTime" in dead[1].message
    assert client.status(minio_upload_id("uploads", KEY)) is not None
    assert redis_conn.llen(consumer.processing_key) == 0


class FlakyIngestor(Ingestor):
    def __init__(self, client: Client, failures: list[Exception]) -> None:
        super().__init__(client)
        self.failures = failures

    def ingest(self, event: UploadEvent) -> Outcome:
        if self.failures:
            raise self.failures.pop(0)
        return super().ingest(event)


def test_a_broker_outage_keeps_the_notification_on_the_processing_list(
    bridge_settings: Callable[..., Settings], client: Client, redis_conn: redis.Redis
) -> None:
    redis_conn.rpush(EVENTS, fixture("put_access.json"))
    consumer = minio_consumer(bridge_settings(), client, ingestor=FlakyIngestor(client, [RedisUnavailable("down")]))
    consumer.poll()  # nothing left over from a previous run

    with pytest.raises(RedisUnavailable):
        consumer.poll()
    assert redis_conn.llen(consumer.processing_key) == 1 and redis_conn.llen(EVENTS) == 0

    consumer.poll()  # retried from the processing list
    assert client.status(minio_upload_id("uploads", KEY)) is not None
    assert redis_conn.llen(consumer.processing_key) == 0
