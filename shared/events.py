"""Versioned, frozen payloads that cross process and language boundaries.

`UploadEvent` v1 is the public contract for producers in any language; its JSON Schema is
published as ``shared/schemas/upload_event.v1.json`` (regenerate with
``python -m shared.events``; a test keeps the file in sync).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import InvalidEvent, PermanentError
from shared.json_limits import loads_bounded
from shared.objects.keys import check_metadata_size

SCHEMA_DIR = Path(__file__).parent / "schemas"
EVENT_MAJOR_VERSION = 1
UPLOAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # also published in the HTTP API's schema
_ID_RE = re.compile(UPLOAD_ID_PATTERN)


def new_upload_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Modality(StrEnum):
    IMAGE = "image"
    TEXT = "text"
    AUDIO = "audio"
    VIDEO = "video"
    AUTO = "auto"


class Stage(StrEnum):
    """Pipeline stages, named as the queue-side work they do."""

    PREPROCESS = "preprocess"
    EMBED = "embed"
    MODERATE = "moderate"
    INDEX = "index"
    SPEECH = "speech"  # the transcript of an audio upload, beside embed (workers/tasks/speech.py)


class UploadStatus(StrEnum):
    QUEUED = "queued"
    PREPROCESSED = "preprocessed"
    EMBEDDED = "embedded"
    MODERATED = "moderated"
    INDEXED = "indexed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (UploadStatus.INDEXED, UploadStatus.FAILED)


class ObjectRef(Frozen):
    """Where the original blob lives. `version_id`/`etag` pin the exact bytes embedded."""

    bucket: str = Field(min_length=1, max_length=255)
    key: str = Field(min_length=1, max_length=1024)
    version_id: str | None = None
    etag: str | None = None
    size: int | None = Field(None, ge=0)
    content_type: str | None = None


class UploadEvent(Frozen):
    """One upload to embed: a stored object or an inline text.

    `version` is ``"1"`` or ``"1.<minor>"``; minor versions only ever add optional fields.
    """

    version: str = "1"
    id: str = Field(default_factory=new_upload_id, description="caller's id or a generated one")
    object: ObjectRef | None = None
    modality: Modality = Modality.AUTO
    text: str | None = Field(None, description="inline text upload (instead of an object)")
    source: str = Field("api", max_length=128)
    tenant: str | None = Field(None, max_length=128)
    metadata: dict[str, str] = Field(default_factory=dict)
    submitted_at: datetime = Field(default_factory=utcnow)

    @field_validator("version")
    @classmethod
    def _known_major(cls, value: str) -> str:
        major = value.split(".", 1)[0]
        if major != str(EVENT_MAJOR_VERSION):
            raise ValueError(
                f"unsupported UploadEvent major version {value!r}; this omnibind reads version {EVENT_MAJOR_VERSION}.x"
            )
        return value

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError("id must be 1-128 characters of A-Z a-z 0-9 . _ : - (starting alphanumeric)")
        return value

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            check_metadata_size(value)
        except PermanentError as exc:
            raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _one_payload(self) -> UploadEvent:
        if (self.object is None) == (self.text is None):
            raise ValueError("exactly one of 'object' and 'text' must be given")
        if self.text is not None and self.modality not in (Modality.TEXT, Modality.AUTO):
            raise ValueError("an inline 'text' upload must have modality 'text' or 'auto'")
        return self


class Band(StrEnum):
    """Where a score falls: allow < review threshold <= review < block threshold <= block."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return _BAND_RANK[self]


_BAND_RANK = {Band.ALLOW: 0, Band.REVIEW: 1, Band.BLOCK: 2}


class ModerationSignal(Frozen):
    """One piece of evidence for one category: a zero-shot score, a detector score or a
    blocklist match, with the thresholds it was held against and the band it reached.

    `margin` is the score minus the threshold of the band reached (minus the review
    threshold when allowed, so negative then)."""

    category: str
    source: str = Field(description="zeroshot | blocklist | a detector name (nudenet, profanity)")
    name: str = Field("", description="the prompt modality, detector label or blocklist entry id")
    score: float
    review: float
    block: float
    band: Band
    margin: float
    detail: str = ""


class Moderation(Frozen):
    """The moderation decision stored with a record, in the status and the decision log.

    `scores` holds the zero-shot score of every category scored for the upload's modality;
    `signals` every piece of evidence (zero-shot, detectors, blocklist) with its thresholds
    and band; `reasons` the signals that fired (band review or block). A record written
    before moderation existed reads as unflagged with no policy."""

    flagged: bool = False
    categories: tuple[str, ...] = ()
    action: Band = Band.ALLOW
    bands: dict[str, Band] = Field(default_factory=dict)
    scores: dict[str, float] = Field(default_factory=dict)
    detector_scores: dict[str, dict[str, float]] = Field(default_factory=dict)
    signals: tuple[ModerationSignal, ...] = ()
    notes: tuple[str, ...] = ()
    policy_version: str | None = None
    policy_name: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    decided_at: datetime | None = None

    @property
    def reasons(self) -> tuple[ModerationSignal, ...]:
        return tuple(s for s in self.signals if s.band is not Band.ALLOW)


class Result(Frozen):
    """What the pipeline announces on the results stream when an upload ends."""

    upload_id: str
    status: UploadStatus
    modality: Modality | None = None
    object: ObjectRef | None = None
    flagged: bool = False
    categories: tuple[str, ...] = ()
    error_reason: str | None = None
    error: str | None = None
    # Audio: what was said (`shared.speech.transcript.status_transcript`), None otherwise.
    transcript: dict[str, Any] | None = None
    at: datetime = Field(default_factory=utcnow)


class DeleteRequest(Frozen):
    """Remove an upload's vector record (task ``omnibind.delete``; the ingest bridge sends it
    when the upload's object is deleted from MinIO). Idempotent: deleting a missing record is
    a no-op.

    `object_version_id`: delete only if the record embeds this version of the object (removing
    an older version leaves the current version's record alone); None = whatever is indexed.

    `removed_at`: when the object was removed. A record of an upload submitted after that
    moment (the key was written again) is kept: the removal is older than what it would
    delete. None = delete regardless of time (requests from before the field existed).
    `sequencer`: the store's ordering token of the removal (MinIO's ``s3.object.sequencer``),
    for logs and tracing only.
    """

    version: str = "1"
    upload_id: str
    object_version_id: str | None = None
    reason: str = Field("object_removed", max_length=64)
    removed_at: datetime | None = None
    sequencer: str | None = Field(None, max_length=64)

    @field_validator("upload_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return UploadEvent._safe_id(value)


def parse_upload_event(raw: bytes | str | dict[str, Any]) -> UploadEvent:
    """Validate an UploadEvent from JSON text or a decoded mapping.

    Raises `InvalidEvent` (a permanent error) whose message names every invalid field;
    `LimitExceeded` (``too_large``, ``too_deep``) for JSON text past the limits of
    `shared.json_limits`, checked before it is parsed.
    """
    data = loads_bounded(raw) if isinstance(raw, bytes | str) else raw
    if not isinstance(data, dict):
        raise InvalidEvent("event must be a JSON object")
    try:
        return UploadEvent.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<event>'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidEvent(f"invalid UploadEvent: {problems}") from exc


def upload_event_json_schema() -> dict[str, Any]:
    schema = UploadEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://omnibind.dev/schemas/upload_event.v1.json"
    return schema


def write_schemas(directory: Path = SCHEMA_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "upload_event.v1.json"
    path.write_text(json.dumps(upload_event_json_schema(), indent=2, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    print(write_schemas())
