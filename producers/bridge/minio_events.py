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

Upload ids are deterministic per object, ``minio-<sha256(bucket/key)[:40]>``: a repeated
notification (same ``eventTime``, used as ``submitted_at``) is the same submission of the
same upload, a new write of the key is a new run of that upload (the record then embeds the
newest bytes: one record per key, like the bucket), and a removal finds the record to delete.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidEvent, PermanentError
from shared.events import DeleteRequest, UploadEvent, parse_upload_event
from shared.objects.keys import validate_key

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

USER_METADATA_PREFIX = "x-amz-meta-"
# User metadata an omnibind producer sets on blobs it stores and enqueues itself
# (`producers.client.Client.submit`): their notifications must not enqueue them again.
UPLOAD_ID_METADATA = "omnibind-upload-id"
TENANT_METADATA = "omnibind-tenant"
MODALITY_METADATA = "omnibind-modality"
UPLOAD_ID_PREFIX = "minio-"


@dataclass(frozen=True, slots=True)
class MinioOptions:
    source: str = "minio"
    ignore_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ingest:
    """New content: embed it."""

    event: UploadEvent


@dataclass(frozen=True, slots=True)
class Delete:
    """The object is gone: delete its record."""

    request: DeleteRequest
    bucket: str
    key: str


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

    Raises `InvalidEvent` when it is not JSON or holds no recognisable record.
    """
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidEvent(f"notification is not valid JSON: {exc}") from exc
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
    bucket, key = _bucket_and_key(record)
    if key.startswith(options.ignore_prefixes):
        return Ignore(f"key {key!r} is under an ignored prefix")
    if name in REMOVES_CONTENT:
        version = _object(record).get("versionId") if name == _REMOVES_ONE_VERSION else None
        request = DeleteRequest(upload_id=minio_upload_id(bucket, key), object_version_id=version or None)
        return Delete(request, bucket, key)
    if name not in CREATES_CONTENT:
        return Ignore(f"{name} does not create new content")
    metadata = user_metadata(_object(record).get("userMetadata"))
    if UPLOAD_ID_METADATA in metadata:
        return Ignore(f"stored and enqueued by an omnibind producer as upload {metadata[UPLOAD_ID_METADATA]}")
    return Ingest(_upload_event(record, bucket, key, metadata, options))


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


def _bucket_and_key(record: Mapping[str, Any]) -> tuple[str, str]:
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    name = bucket.get("name") if isinstance(bucket, dict) else None
    encoded = _object(record).get("key")
    if not isinstance(name, str) or not name or not isinstance(encoded, str) or not encoded:
        raise InvalidEvent("event record has no s3.bucket.name or s3.object.key")
    key = decode_key(encoded)
    try:
        validate_key(key)
    except PermanentError as exc:
        raise InvalidEvent(f"object key is not usable: {exc.message}") from exc
    return name, key


def _upload_event(
    record: Mapping[str, Any], bucket: str, key: str, metadata: dict[str, str], options: MinioOptions
) -> UploadEvent:
    event_time = record.get("eventTime")
    if not isinstance(event_time, str) or not event_time:
        raise InvalidEvent("event record has no eventTime")
    obj = _object(record)
    ref = {
        "bucket": bucket,
        "key": key,
        "version_id": obj.get("versionId") or None,
        "etag": obj.get("eTag") or None,
        "size": obj.get("size"),
        "content_type": obj.get("contentType") or None,
    }
    tenant = metadata.pop(TENANT_METADATA, None)
    modality = metadata.pop(MODALITY_METADATA, "auto")
    return parse_upload_event(
        {
            "id": minio_upload_id(bucket, key),
            "object": {name: value for name, value in ref.items() if value is not None},
            "modality": modality,
            "source": options.source,
            "tenant": tenant,
            "metadata": metadata,
            "submitted_at": event_time,
        }
    )
