"""Real MinIO notifications through the bridge: a live MinIO pushes onto a real redis-server
(``access`` format, target OMNIBIND, as compose wires it); the bucket is subscribed the way
`omnibind bridge` does it (``OMNIBIND_BRIDGE__MINIO_NOTIFY_ARN``), and what MinIO pushed is
mapped by the consumer (`MinioEventsConsumer.action_for`, with the object store it uses to
tell a delete marker's removal from its creation).

Each operation waits for its own notification before the next one where the consumer's HEAD
must see the key as it was right after that operation (delete markers)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis
from minio import Minio
from minio.commonconfig import ENABLED, CopySource, Tags
from minio.versioningconfig import VersioningConfig

from producers.bridge.enqueue import Ingestor
from producers.bridge.list_consumer import MinioEventsConsumer
from producers.bridge.minio_events import Delete, Ignore, Ingest, MinioOptions, minio_upload_id, parse_notification
from producers.bridge.service import raw_redis, subscribe_configured_bucket
from producers.bridge.subscription import UnknownTarget
from producers.client import Client
from shared.config import Settings
from shared.events import Modality, UploadEvent, UploadStatus
from shared.objects.factory import open_object_store
from shared.objects.store import ObjectStore
from shared.status import StatusStore
from shared.streams import DeadLetterStream
from shared.vectors.factory import open_vector_store
from shared.vectors.records import VectorRecord
from shared.vectors.store import VectorStore
from tests.producers.bridge.conftest import queued_tasks
from tests.support.minio_server import MinioServer
from tests.support.redis_server import RedisServers
from tests.support.waiting import wait_until
from workers.deleter import delete_record

BUCKET = "uploads"
EVENTS_KEY = "omnibind:minio:events"
PART_BYTES = 5 * 1024 * 1024
ARRIVAL_DEADLINE_S = 30.0  # MinIO sends from its queue dir in the background


@dataclass
class LiveMinio:
    server: MinioServer
    settings: Settings
    raw: redis.Redis
    objects: ObjectStore
    consumer: MinioEventsConsumer
    client: Client

    @property
    def sdk(self) -> Minio:
        s = self.server
        return Minio(s.endpoint, s.access_key, s.secret_key, secure=False, region=s.region)

    def next_records(self, count: int = 1) -> list[dict[str, Any]]:
        """The next `count` records MinIO pushed, oldest first (popped off its list)."""
        records: list[dict[str, Any]] = []

        def enough() -> bool:
            popped: Any = self.raw.blpop([EVENTS_KEY], timeout=1.0)  # wakes on a push: no sleep
            if popped is not None:
                records.extend(parse_notification(popped[1]))
            return len(records) >= count

        wait_until(enough, timeout_s=ARRIVAL_DEADLINE_S, what=lambda: f"{count} notifications: {records}", poll_s=0)
        return records

    def next_action(self) -> tuple[str, Ingest | Delete | Ignore]:
        (record,) = self.next_records()
        return record["eventName"], self.consumer.action_for(record)

    def put(self, key: str, data: bytes, **options: Any) -> Any:
        return self.sdk.put_object(BUCKET, key, io.BytesIO(data), len(data), **options)

    def version(self) -> None:
        self.sdk.set_bucket_versioning(BUCKET, VersioningConfig(ENABLED))


def start_live_minio(
    make_settings: Callable[..., Settings],
    redis_servers: RedisServers,
    make_minio_server: Callable[..., MinioServer],
    *,
    arn: str | None = None,
    region: str | None = None,
) -> tuple[LiveMinio, Client]:
    redis_server = redis_servers.start()
    server = make_minio_server(redis_address=f"127.0.0.1:{redis_server.port}", region=region)
    settings = make_settings(
        redis_url=redis_server.url,
        objects=server.object_settings(bucket=BUCKET, part_size_bytes=PART_BYTES),
        bridge={"minio_notify_arn": arn or server.notify_arn, "block_s": 0.2},
    )
    subscribe_configured_bucket(settings, threading.Event())  # what `omnibind bridge` does at start
    client = Client(settings, source="test")
    objects = open_object_store(settings)
    raw = raw_redis(settings)
    consumer = MinioEventsConsumer(
        raw,
        EVENTS_KEY,
        "live-test",
        Ingestor(client),
        DeadLetterStream.from_settings(client.redis, settings),
        MinioOptions(ignore_prefixes=tuple(settings.bridge.minio_ignore_prefixes)),
        block_s=0.2,
        objects=objects,
    )
    consumer.start()
    return LiveMinio(server, settings, raw, objects, consumer, client), client


@pytest.fixture
def live(
    make_settings: Callable[..., Settings],
    redis_servers: RedisServers,
    make_minio_server: Callable[..., MinioServer],
) -> Iterator[LiveMinio]:
    minio, client = start_live_minio(make_settings, redis_servers, make_minio_server)
    yield minio
    client.close()
    minio.objects.close()
    minio.raw.close()


def test_live_put_multipart_and_copy_are_ingested_as_the_bytes_minio_reports(live: LiveMinio) -> None:
    put = live.put("a.txt", b"hello", metadata={"album": "summer"})
    big = live.objects.put(BUCKET, "big.bin", b"x" * (PART_BYTES + 1))  # two parts
    live.sdk.copy_object(BUCKET, "copy.txt", CopySource(BUCKET, "a.txt"))

    mapped = [(r["eventName"], live.consumer.action_for(r)) for r in live.next_records(3)]

    names = [name for name, _ in mapped]
    assert names == ["s3:ObjectCreated:Put", "s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectCreated:Copy"]
    events = [action.event for _, action in mapped if isinstance(action, Ingest)]
    assert [(e.object.key, e.object.etag, e.object.size) for e in events if e.object] == [
        ("a.txt", put.etag, 5),
        ("big.bin", big.etag, PART_BYTES + 1),
        ("copy.txt", put.etag, 5),
    ]
    assert big.etag is not None and big.etag.endswith("-2"), "a multipart etag names its part count"
    assert events[0].metadata == {"album": "summer"} and events[2].metadata == {"album": "summer"}
    assert events[0].submitted_at < events[1].submitted_at < events[2].submitted_at


def test_live_tag_changes_are_ignored(live: LiveMinio) -> None:
    live.put("tagged.txt", b"hello")
    tags = Tags.new_object_tags()
    tags["team"] = "a"
    live.sdk.set_object_tags(BUCKET, "tagged.txt", tags)
    live.sdk.delete_object_tags(BUCKET, "tagged.txt")

    mapped = [(r["eventName"], live.consumer.action_for(r)) for r in live.next_records(3)]

    assert [name for name, _ in mapped] == [
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:DeleteTagging",
    ]
    assert isinstance(mapped[0][1], Ingest)
    assert [type(action) for _, action in mapped[1:]] == [Ignore, Ignore]


def test_live_folder_marker_is_ignored_not_dead_lettered(live: LiveMinio) -> None:
    live.put("photos/", b"")
    consumer = live.consumer

    # The first poll looks at the processing list; each blocks until a notification or a
    # short idle wait.
    handled = wait_until(
        consumer.poll, timeout_s=ARRIVAL_DEADLINE_S, what="MinIO to notify the folder marker", poll_s=0
    )

    assert handled == 1
    assert DeadLetterStream(live.client.redis).entries() == []
    assert queued_tasks(live.client.redis, "cpu") == []
    assert live.raw.llen(consumer.processing_key) == 0


def test_live_folder_marker_maps_to_ignore_with_a_reason(live: LiveMinio) -> None:
    live.put("photos/", b"")

    name, action = live.next_action()

    assert name == "s3:ObjectCreated:Put"
    assert isinstance(action, Ignore) and "folder marker" in action.reason


def test_live_delete_in_an_unversioned_bucket_deletes_with_its_time(live: LiveMinio) -> None:
    live.put("gone.txt", b"hello")
    _, created = live.next_action()
    live.sdk.remove_object(BUCKET, "gone.txt")

    (record,) = live.next_records()
    removal = live.consumer.action_for(record)

    assert record["eventName"] == "s3:ObjectRemoved:Delete" and "versionId" not in record["s3"]["object"]
    assert isinstance(created, Ingest) and isinstance(removal, Delete)
    request = removal.request
    assert request.upload_id == minio_upload_id(BUCKET, "gone.txt") == created.event.id
    assert request.object_version_id is None
    assert request.sequencer == record["s3"]["object"]["sequencer"]
    assert request.removed_at is not None and request.removed_at > created.event.submitted_at


def test_live_versioned_removals_delete_the_record_of_what_they_removed(live: LiveMinio) -> None:
    live.version()
    first = live.put("v.txt", b"one")
    live.put("v.txt", b"two")
    live.next_records(2)

    live.sdk.remove_object(BUCKET, "v.txt", version_id=first.version_id)
    name, one_version = live.next_action()
    assert name == "s3:ObjectRemoved:Delete"
    assert isinstance(one_version, Delete) and one_version.request.object_version_id == first.version_id

    live.sdk.remove_object(BUCKET, "v.txt")
    (record,) = live.next_records()
    marker = live.consumer.action_for(record)
    assert record["eventName"] == "s3:ObjectRemoved:DeleteMarkerCreated"
    assert record["s3"]["object"]["versionId"] not in (None, "", first.version_id), "the marker's own version"
    assert isinstance(marker, Delete) and marker.request.object_version_id is None


def test_live_removing_a_delete_marker_reindexes_the_visible_version(live: LiveMinio) -> None:
    live.version()
    put = live.put("back.txt", b"hello", metadata={"album": "x"})
    live.next_records()
    live.sdk.remove_object(BUCKET, "back.txt")
    (created,) = live.next_records()
    assert isinstance(live.consumer.action_for(created), Delete)
    marker_version = created["s3"]["object"]["versionId"]

    live.sdk.remove_object(BUCKET, "back.txt", version_id=marker_version)  # undelete
    (removed,) = live.next_records()
    action = live.consumer.action_for(removed)

    # MinIO reports the removal under the creation's name and the marker's version id.
    assert removed["eventName"] == "s3:ObjectRemoved:DeleteMarkerCreated"
    assert removed["s3"]["object"]["versionId"] == marker_version
    assert isinstance(action, Ingest)
    ref = action.event.object
    assert ref is not None and (ref.key, ref.version_id, ref.etag) == ("back.txt", put.version_id, put.etag)
    assert action.event.metadata == {"album": "x"}
    assert action.event.id == minio_upload_id(BUCKET, "back.txt")


def index(vectors: VectorStore, statuses: StatusStore, event: UploadEvent) -> None:
    """What a worker run of `event` leaves behind: its record, and its status indexed."""
    statuses.create(event)
    vector = np.zeros(32, dtype=np.float32)  # shape (32,): the tiny model's dimension
    vector[0] = 1.0
    record = VectorRecord(
        upload_id=event.id, vector=vector, modality=Modality.TEXT, object=event.object, created_at=event.submitted_at
    )
    vectors.upsert([record])
    statuses.advance(event.id, UploadStatus.INDEXED)


def test_live_delete_then_recreate_keeps_the_new_objects_record(
    live: LiveMinio, make_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    live.put("again.txt", b"old")
    live.sdk.remove_object(BUCKET, "again.txt")
    new = live.put("again.txt", b"new")
    actions = [live.consumer.action_for(r) for r in live.next_records(3)]
    assert [type(a) for a in actions] == [Ingest, Delete, Ingest]
    first, removal, second = actions
    assert isinstance(first, Ingest) and isinstance(removal, Delete) and isinstance(second, Ingest)

    vectors = open_vector_store(make_settings())
    try:
        statuses = StatusStore(redis_conn)
        # The delete task waits while a run of the upload is in flight, so it runs after both.
        index(vectors, statuses, first.event)
        index(vectors, statuses, second.event)
        deleted = delete_record(vectors, statuses, removal.request)

        kept = vectors.get(removal.request.upload_id)
    finally:
        vectors.close()
    assert deleted is False
    assert kept is not None and kept.object is not None and kept.object.etag == new.etag


def test_live_regional_minio_is_subscribed_once_and_notifies(
    make_settings: Callable[..., Settings],
    redis_servers: RedisServers,
    make_minio_server: Callable[..., MinioServer],
) -> None:
    # Configured as compose does, without a region; MinIO stores the ARN with its region.
    minio, client = start_live_minio(
        make_settings, redis_servers, make_minio_server, arn="arn:minio:sqs::OMNIBIND:redis", region="eu-west-1"
    )
    try:
        subscribe_configured_bucket(minio.settings, threading.Event())  # the next start
        queues = minio.sdk.get_bucket_notification(BUCKET).queue_config_list
        assert [q.queue for q in queues] == ["arn:minio:sqs:eu-west-1:OMNIBIND:redis"]

        minio.put("regional.txt", b"hello")
        name, action = minio.next_action()
        assert name == "s3:ObjectCreated:Put" and isinstance(action, Ingest)
    finally:
        client.close()
        minio.objects.close()
        minio.raw.close()


def test_an_arn_minio_does_not_know_stops_the_subscription_with_the_fix_after_the_wait(
    make_settings: Callable[..., Settings],
    redis_servers: RedisServers,
    make_minio_server: Callable[..., MinioServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_minio_server(redis_address=f"127.0.0.1:{redis_servers.start().port}")
    settings = make_settings(
        objects=server.object_settings(bucket=BUCKET),
        bridge={"minio_notify_arn": "arn:minio:sqs::NOSUCH:redis", "minio_target_wait_s": 1.0},
    )
    caplog.set_level("INFO", logger="producers.bridge.service")

    with pytest.raises(UnknownTarget, match="MINIO_NOTIFY_REDIS_ENABLE_<ID>=on") as refused:
        subscribe_configured_bucket(settings, threading.Event())

    assert "arn:minio:sqs::NOSUCH:redis" in str(refused.value)
    assert "does not know arn:minio:sqs::NOSUCH:redis yet" in caplog.text, "asked again before giving up"
    assert Minio(server.endpoint, server.access_key, server.secret_key, secure=False).bucket_exists(BUCKET)
