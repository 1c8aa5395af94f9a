"""MinIO bucket notifications -> uploads to embed or records to delete (pure).

MinIO's notify_redis target in ``access`` format RPUSHes one JSON document per event onto a
list: ``[{"Event": [<record>], "EventTime": "..."}]``, each record shaped like S3's event
message (``eventName``, ``eventTime``, ``s3.bucket.name``, ``s3.object.{key, size, eTag,
contentType, userMetadata, versionId, sequencer}``). The webhook-style document
``{"EventName", "Key", "Records": [...]}`` and a bare record are accepted as well.

What MinIO really sends, and how it is read here:

* ``key`` is escaped like Go's ``url.QueryEscape``: ``+`` for a space, ``%XX`` for every
  other byte outside ``A-Za-z0-9-_.~`` (``/`` included) -> `decode_key`.
* ``size``, ``eTag``, ``contentType``, ``userMetadata`` and ``versionId`` may be absent
  (removal events carry none of the first four; unversioned buckets have no version).
* ``s3:ObjectCreated:*`` also fires for tag, retention and legal-hold changes, which do not
  change the bytes: only Put, Post, Copy and CompleteMultipartUpload are new content.
* ``userMetadata`` holds ``X-Amz-Meta-<Name>`` entries (and e.g. ``content-type``).
* ``sequencer`` is ``%X`` of the object version's modification time in Unix nanoseconds
  (for a removal: of the removal itself), while ``eventTime`` is cut to milliseconds and taken
  after the response was sent. So the sequencer orders a write against a removal of the same
  key where eventTime may tie: `change_time` reads it, with eventTime as the fallback.
* A key ending in ``/`` is a folder marker (``mc mb``, consoles), not content: ignored.
* Removing a delete marker (an undelete, ``DELETE ?versionId=<marker>``) is reported as
  ``ObjectRemoved:DeleteMarkerCreated`` with the marker's versionId, exactly like creating
  it: the consumer looks at what the key shows now (`after_marker_event`).

Upload ids are deterministic per object, ``minio-<sha256(bucket/key)[:40]>``: a repeated
notification (same ``eventTime``, used as ``submitted_at``) is the same submission of the
same upload, a new write of the key is a new run of that upload (the record then embeds the
newest bytes: one record per key, like the bucket), and a removal finds the record to delete.
An upload's ``submitted_at`` and a removal's ``removed_at`` are both `change_time`s, so the
delete task can tell a removal from a later write of the same key (`workers.deleter`).

Tenants: an object's tenant is the one its location maps to (`MinioOptions.tenants`,
``OMNIBIND_BRIDGE__OBJECT_TENANTS``), and its upload id is in that tenant's namespace,
``acme:minio-<...>``. The ``omnibind-tenant`` user metadata cannot choose a tenant: naming
another than the location's is refused (`tenants.TenantMismatch`, dead-lettered).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.bridge.tenants import SourceTenancy
from shared.errors import InvalidEvent, PermanentError
from shared.events import DeleteRequest, UploadEvent, parse_upload_event
from shared.json_limits import loads_bounded
from shared.objects.keys import validate_key
from shared.objects.store import ObjectInfo
from shared.tenancy import ObjectTenants, qualify

# Event names that create new content; the other s3:ObjectCreated:* names only touch tags,
# retention or legal holds of existing bytes.
CREATES_CONTENT = frozenset(
    {"ObjectCreated:Put", "ObjectCreated:Post", "ObjectCreated:Copy", "ObjectCreated:CompleteMultipartUpload"}
)
# ObjectRemoved:NoOP (deleting what did not exist) removes nothing.
REMOVES_CONTENT = frozenset(
    {"ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated", "ObjectRemoved:DeleteAllVersions"}
)
# Only a plain Delete names the version it removed; a delete marker's versionId is the
# marker's own, and DeleteAllVersions removes them all.
_REMOVES_ONE_VERSION = "ObjectRemoved:Delete"
# Creating a delete marker and removing one (an undelete) both carry this name.
_MARKER_EVENT = "ObjectRemoved:DeleteMarkerCreated"
# A sequencer further from eventTime than this is not the change's time (a tar-extracted
# object keeps its entry's time, AWS sequencers are opaque): eventTime is used instead. The
# change happens before the event is made; eventTime is cut to milliseconds.
_SEQUENCER_EARLIEST = timedelta(minutes=1)
_SEQUENCER_LATEST = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

USER_METADATA_PREFIX = "x-amz-meta-"
# User metadata an omnibind producer sets on blobs it stores and enqueues itself
# (`producers.client.Client.submit`): their notifications must not enqueue them again.
UPLOAD_ID_METADATA = "omnibind-upload-id"
TENANT_METADATA = "omnibind-tenant"
MODALITY_METADATA = "omnibind-modality"
UPLOAD_ID_PREFIX = "minio-"


NO_TENANTS = ObjectTenants("")  # no object has a tenant


@dataclass(frozen=True, slots=True)
class MinioOptions:
    source: str = "minio"
    ignore_prefixes: tuple[str, ...] = ()
    tenants: ObjectTenants = NO_TENANTS

    def upload_id(self, bucket: str, key: str) -> str:
        """The upload id of an object: `minio_upload_id` in its owner's namespace."""
        return qualify(self.tenants.owner(bucket, key), minio_upload_id(bucket, key))

    def tenancy(self, bucket: str, key: str) -> SourceTenancy:
        return SourceTenancy(self.tenants.owner(bucket, key), self.tenants, f"MinIO location {bucket}/{key}")


@dataclass(frozen=True, slots=True)
class Ingest:
    """New content: embed it."""

    event: UploadEvent


@dataclass(frozen=True, slots=True)
class Delete:
    """The object is gone: delete its record.

    `marker_event`: the event may as well be the removal of a delete marker (see the module
    doc); `after_marker_event` decides once the key's current state is known."""

    request: DeleteRequest
    bucket: str
    key: str
    marker_event: bool = False


@dataclass(frozen=True, slots=True)
class Ignore:
    """Nothing to do, and why."""

    reason: str


Action = Ingest | Delete | Ignore


def minio_upload_id(bucket: str, key: str) -> str:
    """The upload id of object `key` in `bucket` (decoded key), the same for every version."""
    digest = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()
    return f"{UPLOAD_ID_PREFIX}{digest[:40]}"


def decode_key(encoded: str) -> str:
    """An object key as MinIO escapes it in events (Go's ``url.QueryEscape``) -> the key.

    Raises `InvalidEvent` when the escapes do not decode to UTF-8.
    """
    try:
        return urllib.parse.unquote_plus(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"object key {encoded!r} does not decode to UTF-8: {exc}") from exc


def parse_notification(raw: bytes | str) -> list[dict[str, Any]]:
    """The event records in one list element MinIO pushed.

    Raises `InvalidEvent` when it is not JSON or holds no recognisable record,
    `LimitExceeded` (``too_large``, ``too_deep``) past `shared.json_limits`' limits, checked
    before it is parsed.
    """
    data: Any = loads_bounded(raw, what="notification")
    documents = data if isinstance(data, list) else [data]
    records: list[dict[str, Any]] = []
    for document in documents:
        if not isinstance(document, dict):
            raise InvalidEvent(f"notification entry must be a JSON object, got {type(document).__name__}")
        if "s3" in document:
            records.append(document)
            continue
        found = document.get("Event", document.get("Records"))
        if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
            raise InvalidEvent("notification has no event records (expected 'Event' or 'Records': [...])")
        records.extend(found)
    if not records:
        raise InvalidEvent("notification holds no event record")
    return records


def map_record(record: Mapping[str, Any], options: MinioOptions) -> Action:
    """What to do about one event record.

    Raises `InvalidEvent` for a record without a usable event name, bucket, key or time, or
    whose metadata makes an invalid UploadEvent.
    """
    name = _event_name(record)
    bucket, key = bucket_and_key(record)
    if key.endswith("/"):
        return Ignore(f"key {key!r} is a folder marker, not content")
    _check_key(key)
    if key.startswith(options.ignore_prefixes):
        return Ignore(f"key {key!r} is under an ignored prefix")
    if name in REMOVES_CONTENT:
        return _delete(record, name, bucket, key, options)
    if name not in CREATES_CONTENT:
        return Ignore(f"{name} does not create new content")
    metadata = user_metadata(_object(record).get("userMetadata"))
    if UPLOAD_ID_METADATA in metadata:
        return Ignore(f"stored and enqueued by an omnibind producer as upload {metadata[UPLOAD_ID_METADATA]}")
    ref = _object(record)
    fields = {"version_id": ref.get("versionId"), "etag": ref.get("eTag"), "size": ref.get("size")}
    fields["content_type"] = ref.get("contentType")
    return Ingest(_upload_event(bucket, key, fields, metadata, change_time(record), options))


def after_marker_event(action: Delete, current: ObjectInfo | None, options: MinioOptions) -> Action:
    """What a ``DeleteMarkerCreated`` event means, given what the key shows now (pure).

    `current`: the key's current version (a HEAD without version), None when it shows
    nothing. Nothing there: the marker hides the object, delete its record (`action`).
    An object there: the marker was removed again (an undelete) or the key was written since;
    either way its current version must be indexed, so it is submitted at the event's time.
    """
    if current is None:
        return action
    if UPLOAD_ID_METADATA in current.metadata:
        return Ignore(f"stored and enqueued by an omnibind producer as upload {current.metadata[UPLOAD_ID_METADATA]}")
    ref = current.ref
    fields = {"version_id": ref.version_id, "etag": ref.etag, "size": ref.size, "content_type": ref.content_type}
    submitted_at = action.request.removed_at
    if submitted_at is None:  # every Delete made by `map_record` has one
        raise InvalidEvent("a delete marker event without a time cannot be replayed as an upload")
    return Ingest(_upload_event(action.bucket, action.key, fields, dict(current.metadata), submitted_at, options))


def change_time(record: Mapping[str, Any]) -> datetime:
    """When the change the record reports happened: the time in MinIO's sequencer (µs,
    taken when the version was written or removed) if it is plausibly that, else eventTime.

    Raises `InvalidEvent` when there is no usable eventTime.
    """
    event_time = _event_time(record)
    sequencer = _object(record).get("sequencer")
    try:
        written = _EPOCH + timedelta(microseconds=int(str(sequencer), 16) // 1000)
    except (ValueError, OverflowError):
        return event_time
    plausible = event_time - _SEQUENCER_EARLIEST <= written <= event_time + _SEQUENCER_LATEST
    return written if plausible else event_time


def user_metadata(raw: Any) -> dict[str, str]:
    """``X-Amz-Meta-<Name>`` entries as ``{name (lower case): value}``; other entries (MinIO
    also lists ``content-type`` there) are dropped."""
    if not isinstance(raw, dict):
        return {}
    return {
        str(name).lower().removeprefix(USER_METADATA_PREFIX): str(value)
        for name, value in raw.items()
        if str(name).lower().startswith(USER_METADATA_PREFIX)
    }


def _event_name(record: Mapping[str, Any]) -> str:
    name = record.get("eventName")
    if not isinstance(name, str) or not name:
        raise InvalidEvent("event record has no eventName")
    return name.removeprefix("s3:")  # MinIO writes "s3:ObjectCreated:Put", AWS "ObjectCreated:Put"


def _object(record: Mapping[str, Any]) -> dict[str, Any]:
    s3 = record.get("s3")
    found = s3.get("object") if isinstance(s3, dict) else None
    return found if isinstance(found, dict) else {}


def bucket_and_key(record: Mapping[str, Any]) -> tuple[str, str]:
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    name = bucket.get("name") if isinstance(bucket, dict) else None
    encoded = _object(record).get("key")
    if not isinstance(name, str) or not name or not isinstance(encoded, str) or not encoded:
        raise InvalidEvent("event record has no s3.bucket.name or s3.object.key")
    return name, decode_key(encoded)


def _check_key(key: str) -> None:
    try:
        validate_key(key)
    except PermanentError as exc:
        raise InvalidEvent(f"object key is not usable: {exc.message}") from exc


def _event_time(record: Mapping[str, Any]) -> datetime:
    raw = record.get("eventTime")
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidEvent(f"event record has no usable eventTime: {raw!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _delete(record: Mapping[str, Any], name: str, bucket: str, key: str, options: MinioOptions) -> Delete:
    obj = _object(record)
    version = obj.get("versionId") if name == _REMOVES_ONE_VERSION else None
    sequencer = obj.get("sequencer")
    request = DeleteRequest(
        upload_id=options.upload_id(bucket, key),
        object_version_id=version or None,
        removed_at=change_time(record),
        sequencer=sequencer if isinstance(sequencer, str) and sequencer else None,
    )
    return Delete(request, bucket, key, marker_event=name == _MARKER_EVENT)


def _upload_event(
    bucket: str,
    key: str,
    fields: Mapping[str, Any],
    metadata: dict[str, str],
    submitted_at: datetime,
    options: MinioOptions,
) -> UploadEvent:
    """The upload of `bucket`/`key`; `fields` are the ObjectRef's optional fields (None or an
    empty string, which MinIO sends for some, leaves one out)."""
    ref = {"bucket": bucket, "key": key} | {name: value for name, value in fields.items() if value not in (None, "")}
    tenancy = options.tenancy(bucket, key)
    tenancy.check_claim(metadata.pop(TENANT_METADATA, None))
    modality = metadata.pop(MODALITY_METADATA, "auto")
    return parse_upload_event(
        {
            "id": options.upload_id(bucket, key),
            "object": ref,
            "modality": modality,
            "source": options.source,
            "tenant": tenancy.tenant,
            "metadata": metadata,
            "submitted_at": submitted_at,
        }
    )
