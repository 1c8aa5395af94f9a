from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from producers.bridge.minio_events import (
    Delete,
    Ignore,
    Ingest,
    MinioOptions,
    after_marker_event,
    decode_key,
    map_record,
    minio_upload_id,
    parse_notification,
)
from shared.errors import InvalidEvent
from shared.events import Modality, ObjectRef
from shared.objects.store import ObjectInfo
from shared.tenancy import ObjectTenants
from tests.producers.bridge.minio_records import access_element, fixture, go_query_escape, record

OPTIONS = MinioOptions(source="minio", ignore_prefixes=("_omnibind/",))
KEY = "photos/summer 2024/café ☕.jpg"


def only_action(raw: str, options: MinioOptions = OPTIONS) -> Ingest | Delete | Ignore:
    records = parse_notification(raw)
    assert len(records) == 1
    return map_record(records[0], options)


def test_a_put_notification_becomes_an_upload_of_the_decoded_key() -> None:
    action = only_action(fixture("put_access.json"))

    assert isinstance(action, Ingest)
    event = action.event
    assert event.object is not None
    assert (event.object.bucket, event.object.key) == ("uploads", KEY)
    assert event.object.size == 24873
    assert event.object.etag == "5d41402abc4b2a76b9719d911017c592"
    assert event.object.content_type == "image/jpeg"
    assert event.object.version_id is None
    assert event.id == minio_upload_id("uploads", KEY)
    assert event.source == "minio"
    assert event.metadata == {"tenant": "acme"}, "only X-Amz-Meta-* entries are user metadata"
    assert event.submitted_at == datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC)


def test_a_removal_notification_deletes_the_record_of_the_same_upload() -> None:
    put = only_action(fixture("put_access.json"))
    removal = only_action(fixture("delete_access.json"))

    assert isinstance(put, Ingest) and isinstance(removal, Delete)
    assert removal.request.upload_id == put.event.id
    assert removal.request.object_version_id is None
    assert (removal.bucket, removal.key) == ("uploads", KEY)


def test_the_webhook_style_document_is_understood_too() -> None:
    action = only_action(fixture("webhook_format.json"))

    assert isinstance(action, Ingest)
    assert action.event.object is not None
    assert action.event.object.key == "hello.jpg"
    assert action.event.object.version_id == "1"
    assert action.event.metadata == {}


@pytest.mark.parametrize(
    "key",
    ["a b+c.txt", "ünïcödé/日本語 ファイル.png", "100% real~file_(1).wav", "emoji 🎧/x=y&z?.mp3", "a//b"],
)
def test_keys_escaped_like_go_query_escape_decode_to_the_original(key: str) -> None:
    assert decode_key(go_query_escape(key)) == key


def test_a_literal_plus_in_a_key_is_escaped_by_minio_and_survives() -> None:
    assert go_query_escape("a+b c") == "a%2Bb+c"
    assert decode_key("a%2Bb+c") == "a+b c"


def test_a_key_that_is_not_utf8_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="UTF-8"):
        decode_key("caf%E9.jpg")


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:DeleteTagging",
        "s3:ObjectCreated:PutRetention",
        "s3:ObjectCreated:PutLegalHold",
        "s3:ObjectAccessed:Get",
        "s3:ObjectRemoved:NoOP",
        "s3:Replication:OperationCompletedReplication",
    ],
)
def test_events_that_do_not_change_the_bytes_are_ignored(event_name: str) -> None:
    action = map_record(record(event_name, "uploads", "a.jpg", size=10, etag="e"), OPTIONS)
    assert isinstance(action, Ignore)


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "ObjectCreated:Put",  # AWS's spelling, without "s3:"
    ],
)
def test_events_that_create_content_are_ingested(event_name: str) -> None:
    assert isinstance(map_record(record(event_name, "uploads", "a.jpg", size=10), OPTIONS), Ingest)


def test_missing_size_etag_content_type_and_metadata_are_fine() -> None:
    action = map_record(record("s3:ObjectCreated:Put", "uploads", "bare.bin"), OPTIONS)

    assert isinstance(action, Ingest)
    assert action.event.object is not None
    assert action.event.object.model_dump(exclude_none=True) == {"bucket": "uploads", "key": "bare.bin"}


def test_keys_under_an_ignored_prefix_are_not_uploads() -> None:
    created = map_record(record("s3:ObjectCreated:Put", "uploads", "_omnibind/export.json", size=3), OPTIONS)
    removed = map_record(record("s3:ObjectRemoved:Delete", "uploads", "_omnibind/export.json"), OPTIONS)
    assert isinstance(created, Ignore) and isinstance(removed, Ignore)


def test_blobs_an_omnibind_producer_stored_itself_are_not_enqueued_twice() -> None:
    metadata = {"X-Amz-Meta-Omnibind-Upload-Id": "u-123", "X-Amz-Meta-Tenant": "acme"}
    action = map_record(record("s3:ObjectCreated:Put", "uploads", "u-123/cat.jpg", user_metadata=metadata), OPTIONS)

    assert isinstance(action, Ignore)
    assert "u-123" in action.reason


def test_the_tenant_comes_from_the_location_and_the_modality_from_omnibind_metadata() -> None:
    options = MinioOptions(tenants=ObjectTenants.parse("uploads", {"media/acme/": "acme"}))
    metadata = {"X-Amz-Meta-Omnibind-Tenant": "acme", "X-Amz-Meta-Omnibind-Modality": "audio", "X-Amz-Meta-Album": "x"}
    action = map_record(record("s3:ObjectCreated:Put", "media", "acme/a.wav", user_metadata=metadata), options)

    assert isinstance(action, Ingest)
    assert action.event.tenant == "acme"
    assert action.event.id == f"acme:{minio_upload_id('media', 'acme/a.wav')}"
    assert action.event.modality is Modality.AUDIO
    assert action.event.metadata == {"album": "x"}


def test_a_repeated_notification_is_the_same_submission_and_a_new_write_is_not() -> None:
    first = map_record(
        record("s3:ObjectCreated:Put", "uploads", "a.jpg", event_time="2024-05-14T09:00:00.000Z"), OPTIONS
    )
    again = map_record(
        record("s3:ObjectCreated:Put", "uploads", "a.jpg", event_time="2024-05-14T09:00:00.000Z"), OPTIONS
    )
    rewrite = map_record(
        record("s3:ObjectCreated:Put", "uploads", "a.jpg", event_time="2024-05-14T09:05:00.000Z"), OPTIONS
    )

    assert isinstance(first, Ingest) and isinstance(again, Ingest) and isinstance(rewrite, Ingest)
    assert first.event == again.event
    assert rewrite.event.id == first.event.id
    assert rewrite.event.submitted_at != first.event.submitted_at


def test_upload_ids_differ_per_bucket_and_key_and_are_valid_ids() -> None:
    ids = {minio_upload_id(b, k) for b, k in [("a-b", "c"), ("a", "b/c"), ("uploads", KEY)]}
    assert len(ids) == 3
    assert all(len(upload_id) <= 128 for upload_id in ids)


def test_removing_one_version_names_it_and_a_delete_marker_does_not() -> None:
    versioned = map_record(record("s3:ObjectRemoved:Delete", "uploads", "a.jpg", version_id="v2"), OPTIONS)
    marker = map_record(record("s3:ObjectRemoved:DeleteMarkerCreated", "uploads", "a.jpg", version_id="dm1"), OPTIONS)
    every = map_record(record("s3:ObjectRemoved:DeleteAllVersions", "uploads", "a.jpg", version_id="v9"), OPTIONS)

    assert isinstance(versioned, Delete) and versioned.request.object_version_id == "v2"
    assert isinstance(marker, Delete) and marker.request.object_version_id is None
    assert isinstance(every, Delete) and every.request.object_version_id is None


def test_an_element_with_several_records_yields_them_all() -> None:
    raw = access_element(record("s3:ObjectCreated:Put", "uploads", "a"), record("s3:ObjectCreated:Put", "uploads", "b"))
    assert [r["s3"]["object"]["key"] for r in parse_notification(raw)] == ["a", "b"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('[{"EventTime": "x"}]', "no event records"),
        ('{"Records": []}', "no event record"),
    ],
)
def test_unreadable_notifications_are_invalid_events(raw: str, problem: str) -> None:
    with pytest.raises(InvalidEvent, match=problem):
        parse_notification(raw)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r.pop("eventName"), "eventName"),
        (lambda r: r["s3"]["bucket"].pop("name"), "bucket"),
        (lambda r: r["s3"]["object"].pop("key"), "key"),
        (lambda r: r.pop("eventTime"), "eventTime"),
        (lambda r: r["s3"]["object"].update(key=go_query_escape("a/../b")), "not usable"),
        (lambda r: r["s3"]["object"].update(size=-1), "size"),
    ],
)
def test_records_missing_what_an_upload_needs_are_invalid_events(change, problem: str) -> None:
    broken = record("s3:ObjectCreated:Put", "uploads", "a.jpg", size=1)
    change(broken)
    with pytest.raises(InvalidEvent, match=problem):
        map_record(json.loads(json.dumps(broken)), OPTIONS)


def sequencer_of(moment: datetime) -> str:
    """MinIO's sequencer: ``%X`` of the version's modification time in Unix nanoseconds."""
    return f"{round(moment.timestamp() * 1_000_000) * 1000:X}"


WRITTEN = datetime(2026, 2, 12, 20, 18, 48, 123456, tzinfo=UTC)
EVENT_TIME = "2026-02-12T20:18:48.125Z"


@pytest.mark.parametrize("name", ["s3:ObjectCreated:Put", "s3:ObjectRemoved:Delete"])
def test_folder_markers_are_ignored_with_a_reason(name: str) -> None:
    action = map_record(record(name, "uploads", "photos/2024/"), OPTIONS)
    assert isinstance(action, Ignore) and "folder marker" in action.reason


def test_times_come_from_minios_sequencer_to_the_microsecond() -> None:
    put = map_record(
        record("s3:ObjectCreated:Put", "uploads", "a", event_time=EVENT_TIME, sequencer=sequencer_of(WRITTEN)), OPTIONS
    )
    removal = map_record(
        record("s3:ObjectRemoved:Delete", "uploads", "a", event_time=EVENT_TIME, sequencer=sequencer_of(WRITTEN)),
        OPTIONS,
    )
    assert isinstance(put, Ingest) and put.event.submitted_at == WRITTEN
    assert isinstance(removal, Delete) and removal.request.removed_at == WRITTEN
    assert removal.request.sequencer == sequencer_of(WRITTEN)


@pytest.mark.parametrize("sequencer", ["not-hex", "0055AED6DCD90281E5", sequencer_of(datetime(2020, 1, 1, tzinfo=UTC))])
def test_a_sequencer_that_is_not_the_changes_time_falls_back_to_event_time(sequencer: str) -> None:
    action = map_record(
        record("s3:ObjectRemoved:Delete", "uploads", "a", event_time=EVENT_TIME, sequencer=sequencer), OPTIONS
    )
    assert isinstance(action, Delete)
    assert action.request.removed_at == datetime(2026, 2, 12, 20, 18, 48, 125000, tzinfo=UTC)


def test_a_delete_marker_event_is_a_delete_while_the_key_shows_nothing_and_an_upload_once_it_does() -> None:
    raw = record("s3:ObjectRemoved:DeleteMarkerCreated", "uploads", "a.jpg", version_id="dm1", event_time=EVENT_TIME)
    action = map_record(raw, OPTIONS)
    assert isinstance(action, Delete) and action.marker_event

    assert after_marker_event(action, None, OPTIONS) == action
    current = ObjectInfo(
        ObjectRef(bucket="uploads", key="a.jpg", version_id="v1", etag="e1", size=3, content_type="image/jpeg"),
        {"album": "x", "omnibind-modality": "image"},
    )
    undeleted = after_marker_event(action, current, OPTIONS)
    assert isinstance(undeleted, Ingest)
    assert undeleted.event.object == current.ref
    assert undeleted.event.id == action.request.upload_id
    assert (undeleted.event.tenant, undeleted.event.modality, undeleted.event.metadata) == (
        None,
        Modality.IMAGE,
        {"album": "x"},
    )
    assert undeleted.event.submitted_at == action.request.removed_at

    producers = ObjectInfo(current.ref, {"omnibind-upload-id": "u-1"})
    assert isinstance(after_marker_event(action, producers, OPTIONS), Ignore)
