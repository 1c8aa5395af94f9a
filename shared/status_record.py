"""An upload's status record as stored in Redis (``{prefix}:upload:{id}``), read into a
typed value; the store that writes and reads it is `shared.status`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field, JsonValue

from shared.events import Frozen, Modality, ObjectRef, Result, Stage, UploadStatus
from shared.redis_replies import reply_text

EXTRA_PREFIX = "x:"


class StatusRecord(Frozen):
    """One upload's status as stored; `timestamps` holds when each status of the current
    run was entered."""

    upload_id: str
    status: UploadStatus
    run: int = 1
    modality: Modality | None = None
    source: str | None = None
    tenant: str | None = None
    object: ObjectRef | None = None
    submitted_at: datetime | None = None
    updated_at: datetime
    timestamps: dict[UploadStatus, datetime] = Field(default_factory=dict)
    flagged: bool | None = None
    categories: tuple[str, ...] = ()
    error_reason: str | None = None
    error: str | None = None
    failed_stage: Stage | None = None
    extra: dict[str, JsonValue] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def to_result(self) -> Result:
        """The result event this record announces (meaningful once terminal)."""
        return Result(
            upload_id=self.upload_id,
            status=self.status,
            modality=self.modality,
            object=self.object,
            flagged=bool(self.flagged),
            categories=self.categories,
            error_reason=self.error_reason,
            error=self.error,
            transcript=transcript if isinstance(transcript := self.extra.get("transcript"), dict) else None,
            at=self.timestamps.get(self.status, self.updated_at),
        )


@dataclass(frozen=True, slots=True)
class RunStart:
    """What a submission did (`StatusStore.start_run`): started run `run` of `upload_id`, or
    found run `run` unfinished (in `status`) and changed nothing."""

    upload_id: str
    started: bool
    run: int
    status: UploadStatus


def parse_record(raw: Mapping[str | bytes, str | bytes]) -> StatusRecord:
    """Build a `StatusRecord` from a record hash as HGETALL returns it (str or bytes)."""
    fields = {reply_text(k): reply_text(v) for k, v in raw.items()}
    timestamps = {s: fields[f"{s.value}_at"] for s in UploadStatus if f"{s.value}_at" in fields}
    extra = {k.removeprefix(EXTRA_PREFIX): json.loads(v) for k, v in fields.items() if k.startswith(EXTRA_PREFIX)}
    flagged = fields.get("flagged")
    return StatusRecord.model_validate(
        {
            "upload_id": fields["id"],
            "status": fields["status"],
            "run": int(fields.get("runs", "1")),
            "modality": fields.get("modality"),
            "source": fields.get("source"),
            "tenant": fields.get("tenant"),
            "object": json.loads(fields["object"]) if "object" in fields else None,
            "submitted_at": fields.get("submitted_at"),
            "updated_at": fields["updated_at"],
            "timestamps": timestamps,
            "flagged": None if flagged is None else flagged == "1",
            "categories": json.loads(fields.get("categories", "[]")),
            "error_reason": fields.get("error_reason"),
            "error": fields.get("error"),
            "failed_stage": fields.get("failed_stage"),
            "extra": extra,
        }
    )
