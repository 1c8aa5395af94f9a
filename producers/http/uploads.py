"""``POST /v1/uploads`` (a file, or a JSON UploadEvent), ``GET /v1/uploads/{id}`` and
``DELETE /v1/uploads/{id}``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from producers.http.auth import authorize
from producers.http.bodies import body_kind, read_file_form, read_json, request_body
from producers.http.errors import ApiError, error_responses
from producers.http.lookup import find_upload
from producers.http.models import UploadAccepted
from producers.http.state import ApiState, State
from producers.http.tenancy import check_object_ref, qualify, submission_tenant
from shared.api_keys import TENANT_PATTERN, KeyScope, Role
from shared.backpressure import UNKNOWN, check_backpressure
from shared.errors import LimitExceeded, ObjectNotFound, PermanentError
from shared.events import UPLOAD_ID_PATTERN, DeleteRequest, Modality, UploadEvent, new_upload_id, parse_upload_event
from shared.json_limits import loads_bounded
from shared.logs import upload_context
from shared.media.sniff import sniff
from shared.media.text import check_text_length
from shared.moderation.log import DecisionLog
from shared.status import RunStart, StatusRecord

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["uploads"])

UploadId = Annotated[str, Path(pattern=UPLOAD_ID_PATTERN, description="the upload id")]


class UploadForm(BaseModel):
    """The fields of a multipart upload besides its file."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=UPLOAD_ID_PATTERN, description="your id for the upload (default: generated)")
    modality: Modality = Field(Modality.AUTO, description="what the file must be (auto: whatever its bytes say)")
    tenant: str | None = Field(
        None, pattern=TENANT_PATTERN, description="one of the API key's tenants (default: its only one)"
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="a JSON object of string values")

    @field_validator("metadata", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return loads_bounded(value, max_bytes=None, what="metadata") if value.strip() else {}
            except PermanentError as exc:  # not JSON, or nested too deeply to parse
                raise ValueError(f"must be a JSON object of strings: {exc.message}") from exc
        return value


def _form_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "the image, text or audio file"},
            "id": {"type": "string", "pattern": UPLOAD_ID_PATTERN, "description": "your id (default: generated)"},
            "modality": {"type": "string", "enum": [m.value for m in Modality], "default": "auto"},
            "tenant": {"type": "string", "pattern": TENANT_PATTERN, "description": "one of the key's tenants"},
            "metadata": {"type": "string", "description": 'JSON object of string values, e.g. {"album": "summer"}'},
        },
    }


@router.post(
    "/uploads",
    status_code=202,
    response_model=UploadAccepted,
    summary="Submit an upload",
    responses={
        200: {"model": UploadAccepted, "description": "a run of this id is unfinished: nothing was queued again"},
        **error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503),
    },
    openapi_extra=request_body(
        json_schema={"$ref": "#/components/schemas/UploadEvent"},
        form_schema=_form_schema(),
        description=(
            "multipart/form-data: a file (stored in the object store, then embedded), or "
            "application/json: an UploadEvent v1 (an inline `text`, or an `object` already in the store)."
        ),
    ),
)
async def create_upload(
    request: Request, response: Response, state: State, caller: Annotated[KeyScope, Depends(authorize(Role.INGEST))]
) -> UploadAccepted:
    """Accept one upload for embedding. Answers 202 as soon as it is queued; follow it at
    `status_url`. A submission of an id whose run is unfinished queues nothing and answers
    200 naming that run (`run`, its `status`, `started: false`). 429 (with Retry-After)
    while the pipeline applies backpressure."""
    kind = body_kind(request)
    # Refuse before reading the body: a busy pipeline should not cost an upload's transfer.
    # The tenant of a key of one tenant is known already; any other is checked once it is.
    tenant = caller.single_tenant if caller.single_tenant is not None else UNKNOWN
    await run_in_threadpool(partial(check_backpressure, state.client.redis, state.settings, tenant=tenant))
    if kind == "json":
        event = _in_namespace(caller, parse_upload_event(await read_json(request)))
        start = await run_in_threadpool(_enqueue_event, state, caller, event)
    else:
        start = await _submit_file(request, state, caller)
    status_url = f"/v1/uploads/{start.upload_id}"
    response.headers["Location"] = status_url
    if not start.started:  # a run of this id is unfinished: nothing was queued again
        response.status_code = 200
    return UploadAccepted(
        id=start.upload_id, status=start.status, status_url=status_url, run=start.run, started=start.started
    )


def _in_namespace(caller: KeyScope, event: UploadEvent) -> UploadEvent:
    """`event` acting for the caller's tenant, its id qualified by that tenant (see tenancy)."""
    tenant = submission_tenant(caller, event.tenant)
    upload_id = qualify(tenant, event.id)
    if (upload_id, tenant) == (event.id, event.tenant):
        return event
    return parse_upload_event({**event.model_dump(mode="json"), "id": upload_id, "tenant": tenant})


def _enqueue_event(state: ApiState, caller: KeyScope, event: UploadEvent) -> RunStart:
    limits = state.settings.limits
    if event.text is not None:
        check_text_length(event.text, max_chars=limits.max_text_chars)
    if event.object is not None:
        check_object_ref(caller, event.tenant, event.object, state.object_owners)
        # Fail fast on a reference to nothing (the worker would fail it a moment later).
        stored = state.client.objects.stat(event.object)
        if stored.size is not None and stored.size > limits.max_bytes:
            raise LimitExceeded(f"object is {stored.size} bytes; the limit is {limits.max_bytes}", reason="too_large")
    with upload_context(event.id):
        start = state.client.enqueue_run(event)
        log.info(
            "%s %s upload from %s",
            "accepted" if start.started else f"run {start.run} unfinished: ignored a repeated",
            "text" if event.text is not None else "object",
            event.source,
        )
    return start


async def _submit_file(request: Request, state: ApiState, caller: KeyScope) -> RunStart:
    part = await read_file_form(request, UploadForm, max_bytes=state.settings.limits.max_bytes, what="upload")
    data, fields = part.data, part.fields
    tenant = submission_tenant(caller, fields.tenant)
    # Checked as an event would be: a qualified id longer than 128 characters is refused.
    upload_id = parse_upload_event({"id": qualify(tenant, fields.id or new_upload_id()), "text": "-"}).id
    # Sniffing is cheap and pure: a file the workers would refuse is refused before it is stored.
    sniffed = sniff(data, part.content_type)
    if fields.modality not in (Modality.AUTO, sniffed.modality):
        raise ApiError(
            422,
            "modality_mismatch",
            f"modality {fields.modality.value} was asked for, "
            f"but the file is {sniffed.format} ({sniffed.modality.value})",
        )

    def submit() -> RunStart:
        start = state.client.submit_run(
            data,
            modality=fields.modality,
            upload_id=upload_id,
            tenant=tenant,
            metadata=fields.metadata,
            filename=part.filename,
            content_type=part.content_type,
        )
        with upload_context(start.upload_id):
            if start.started:
                log.info("accepted %s file of %d bytes", sniffed.format, len(data))
            else:
                log.info("run %d unfinished: ignored a repeated %s file", start.run, sniffed.format)
        return start

    return await run_in_threadpool(submit)


@router.get(
    "/uploads/{upload_id}",
    response_model=StatusRecord,
    summary="Follow an upload",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
def get_upload(
    upload_id: UploadId, state: State, caller: Annotated[KeyScope, Depends(authorize(Role.READ))]
) -> StatusRecord:
    """The upload's status record: status and when each was reached, modality, object ref,
    moderation (flagged, categories) once indexed, error reason and message if failed."""
    return find_upload(state, caller, upload_id)  # another tenant's: exactly like a missing one


class UploadDeleted(BaseModel):
    id: str
    object_deleted: bool = Field(description="the stored file was removed (false: an inline text, or gone already)")
    status: str = Field("deleting", description="the vector record is removed by an index worker shortly")


@router.delete(
    "/uploads/{upload_id}",
    response_model=UploadDeleted,
    status_code=202,
    summary="Delete an upload",
    responses=error_responses(401, 403, 404, 409, 422, 500, 503),
)
def delete_upload(
    upload_id: UploadId, state: State, caller: Annotated[KeyScope, Depends(authorize(Role.INGEST))]
) -> UploadDeleted:
    """Delete a finished upload: its stored file now, its status record now, its vector
    record (search) by an index worker within moments (the deletion is recorded in Redis
    first, so it survives a lost message). 409 ``upload_in_flight`` while a run is
    unfinished: delete it once it ended."""
    record = find_upload(state, caller, upload_id)
    if not record.terminal:
        raise ApiError(
            409, "upload_in_flight", f"upload {record.upload_id} is {record.status.value}: wait until it ends"
        )
    deleted = False
    if record.object is not None:
        try:
            state.client.objects.delete(record.object)
            deleted = True
        except ObjectNotFound:
            pass
    state.client.delete(DeleteRequest(upload_id=record.upload_id, reason="api", removed_at=datetime.now(UTC)))
    if not state.client.statuses.forget(record.upload_id):
        raise ApiError(409, "upload_in_flight", f"upload {record.upload_id} started a new run: delete it once it ended")
    DecisionLog.from_settings(state.client.redis, state.settings).forget(record.upload_id)
    return UploadDeleted(id=record.upload_id, object_deleted=deleted)
