"""Record <-> flat properties: the one schema every vector backend stores.

Both adapters keep the same property names and meanings, so a record reads back the same
from LanceDB and Weaviate and a later migration between them is a copy. Each property is
a scalar (text, int, bool, date) or a list of text, because that is what both backends can
filter on. Two properties are JSON blobs:

- ``metadata_json``: the caller's flat string map (neither backend has a map type with
  arbitrary keys);
- ``moderation_json``: the whole moderation decision. It can grow (bands, reasons,
  thresholds) without a schema change; ``flagged``, ``categories`` and ``policy_version``
  are copied out of it as flat, filterable properties.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from shared.events import Modality, Moderation, ObjectRef
from shared.vectors.records import VectorRecord


class Kind(StrEnum):
    """What a property holds; each adapter maps it to its own column/data type."""

    TEXT = "text"
    TEXT_LIST = "text[]"
    INT = "int"
    BOOL = "bool"
    DATE = "date"
    JSON = "json"  # text holding a JSON document; stored, never filtered on


@dataclass(frozen=True, slots=True)
class PropertySpec:
    name: str
    kind: Kind
    filterable: bool = False
    description: str = ""


PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec("upload_id", Kind.TEXT, True, "the upload's id (the record uuid is derived from it)"),
    PropertySpec("modality", Kind.TEXT, True, "image | text | audio | video"),
    PropertySpec("object_bucket", Kind.TEXT, True, "bucket of the original blob"),
    PropertySpec("object_key", Kind.TEXT, True, "key of the original blob"),
    PropertySpec("object_version_id", Kind.TEXT, False, "version id of the exact bytes embedded"),
    PropertySpec("object_etag", Kind.TEXT, False, "etag of the exact bytes embedded"),
    PropertySpec("object_size", Kind.INT, False, "size the producer announced"),
    PropertySpec("object_content_type", Kind.TEXT, False, "content type the producer announced"),
    PropertySpec("content_type", Kind.TEXT, True, "content type sniffed from the bytes"),
    PropertySpec("size", Kind.INT, False, "bytes read"),
    PropertySpec("sha256", Kind.TEXT, True, "SHA-256 of the bytes (finds duplicates)"),
    PropertySpec("source", Kind.TEXT, True, "which producer sent the upload"),
    PropertySpec("tenant", Kind.TEXT, True, "tenant the upload belongs to"),
    PropertySpec("metadata_json", Kind.JSON, False, "caller's flat string map, as JSON"),
    PropertySpec("flagged", Kind.BOOL, True, "moderation: any category fired"),
    PropertySpec("categories", Kind.TEXT_LIST, True, "moderation: categories that fired"),
    PropertySpec("policy_version", Kind.TEXT, True, "moderation: policy version applied"),
    PropertySpec("moderation_json", Kind.JSON, False, "moderation: the whole decision, as JSON"),
    PropertySpec("transcript_json", Kind.JSON, False, "speech: the transcript (segments, passages and their vectors)"),
    PropertySpec("model", Kind.TEXT, True, "embedding model name"),
    PropertySpec("checkpoint", Kind.TEXT, True, "SHA-256 of the model checkpoint"),
    PropertySpec("created_at", Kind.DATE, True, "when the upload was submitted"),
    PropertySpec("indexed_at", Kind.DATE, True, "when this record was written"),
)
PROPERTY_NAMES: tuple[str, ...] = tuple(spec.name for spec in PROPERTIES)


def record_to_properties(record: VectorRecord) -> dict[str, Any]:
    """The flat properties of `record` (everything but the vector), keyed by `PROPERTY_NAMES`.

    Dates come out timezone-aware in UTC (a naive datetime is taken to be UTC already).
    """
    ref = record.object
    moderation = record.moderation
    return {
        "upload_id": record.upload_id,
        "modality": Modality(record.modality).value,
        "object_bucket": ref.bucket if ref else None,
        "object_key": ref.key if ref else None,
        "object_version_id": ref.version_id if ref else None,
        "object_etag": ref.etag if ref else None,
        "object_size": ref.size if ref else None,
        "object_content_type": ref.content_type if ref else None,
        "content_type": record.content_type,
        "size": record.size,
        "sha256": record.sha256,
        "source": record.source,
        "tenant": record.tenant,
        "metadata_json": json.dumps(dict(record.metadata), sort_keys=True, ensure_ascii=False),
        "flagged": bool(moderation.flagged),
        "categories": list(moderation.categories),
        "policy_version": moderation.policy_version,
        "moderation_json": moderation.model_dump_json(),
        "transcript_json": json.dumps(record.transcript, ensure_ascii=False) if record.transcript is not None else None,
        "model": record.model,
        "checkpoint": record.checkpoint,
        "created_at": as_utc(record.created_at),
        "indexed_at": as_utc(record.indexed_at),
    }


def properties_to_record(
    properties: Mapping[str, Any], vector: np.ndarray, parts: Mapping[str, np.ndarray] | None = None
) -> VectorRecord:
    """Rebuild a `VectorRecord` from stored properties, its vector and its parts (copied to float32).

    Missing optional properties read as their defaults, so rows written by an older schema
    still load.
    """
    props = dict(properties)
    return VectorRecord(
        upload_id=str(props["upload_id"]),
        vector=np.array(vector, dtype=np.float32),
        modality=Modality(props["modality"]),
        object=_object_ref(props),
        content_type=props.get("content_type"),
        size=_optional_int(props.get("size")),
        sha256=props.get("sha256"),
        source=props.get("source") or "api",
        tenant=props.get("tenant"),
        metadata=_metadata(props.get("metadata_json")),
        moderation=_moderation(props),
        transcript=json.loads(props["transcript_json"]) if props.get("transcript_json") else None,
        model=props.get("model") or "",
        checkpoint=props.get("checkpoint") or "",
        created_at=as_utc(props["created_at"]),
        indexed_at=as_utc(props["indexed_at"]),
        parts={name: np.array(part, dtype=np.float32) for name, part in (parts or {}).items()},
    )


def as_utc(value: datetime | str) -> datetime:
    """`value` as an aware UTC datetime; naive means UTC, strings are ISO 8601 / RFC 3339."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _object_ref(props: Mapping[str, Any]) -> ObjectRef | None:
    if not props.get("object_bucket"):
        return None
    return ObjectRef(
        bucket=props["object_bucket"],
        key=props["object_key"],
        version_id=props.get("object_version_id"),
        etag=props.get("object_etag"),
        size=_optional_int(props.get("object_size")),
        content_type=props.get("object_content_type"),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _metadata(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    return {str(key): str(value) for key, value in json.loads(raw).items()}


def _moderation(props: Mapping[str, Any]) -> Moderation:
    raw = props.get("moderation_json")
    if not raw:
        # Written without the blob: the flat copies are all there is.
        return Moderation(
            flagged=bool(props.get("flagged")),
            categories=tuple(props.get("categories") or ()),
            policy_version=props.get("policy_version"),
        )
    data = json.loads(raw)
    # A record written by a newer omnibind may carry fields this one does not know yet;
    # reading it must not fail (the model forbids extra fields), so they are left out.
    known = {key: value for key, value in data.items() if key in Moderation.model_fields}
    return Moderation.model_validate(known)
