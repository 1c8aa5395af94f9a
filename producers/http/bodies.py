"""Reading request bodies that may be JSON or multipart, with our errors.

`POST /v1/uploads` and `POST /v1/search` take either a JSON document or a multipart form
with a file, so they read their bodies themselves (after auth and backpressure checks, so
a refused request is answered before its body is read) and describe both content types in
the OpenAPI document (`request_body`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from producers.http.errors import ApiError, FieldProblem, validation_problems
from shared.errors import InvalidEvent, LimitExceeded
from shared.json_limits import MAX_JSON_DEPTH, loads_bounded

M = TypeVar("M", bound=BaseModel)
BodyKind = Literal["json", "multipart"]
MAX_FORM_FIELDS = 16


def body_kind(request: Request) -> BodyKind:
    """Which of the two accepted bodies the request declares; raises a 415 `ApiError`."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return "json"
    if media_type == "multipart/form-data":
        return "multipart"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send application/json or multipart/form-data, not {media_type or 'no content type'}",
    )


async def read_json(request: Request) -> Any:
    """The decoded JSON body. Raises a 400 `ApiError`: ``too_deep`` for a body nested deeper
    than `MAX_JSON_DEPTH` (checked before parsing), ``bad_json`` for bytes that are not UTF-8
    JSON. (Its size was bounded by `producers.http.limits` before it was read.)"""
    raw = await request.body()
    try:
        return loads_bounded(raw, max_bytes=None, max_depth=MAX_JSON_DEPTH, what="the body")
    except LimitExceeded as exc:
        raise ApiError(400, exc.reason, exc.message) from exc
    except InvalidEvent as exc:
        raise ApiError(400, "bad_json", exc.message) from exc


async def read_form(request: Request) -> FormData:
    """The multipart form (one file at most; files spool to disk past 1 MB)."""
    return await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)


@dataclass(frozen=True)
class FilePart(Generic[M]):
    """A multipart request's file (its bytes, name and declared type) and its other fields."""

    data: bytes
    filename: str | None
    content_type: str | None
    fields: M


async def read_file_form(request: Request, fields: type[M], *, max_bytes: int, what: str) -> FilePart[M]:
    """The ``file`` part and the other fields (validated as `fields`) of a multipart body.
    Raises a 422 `ApiError` for a missing file or invalid fields, `LimitExceeded`
    (``too_large``, naming the file as `what`) past `max_bytes`."""
    form = await read_form(request)
    try:
        upload = form_file(form)
        options = validate(fields, form_text_fields(form), where="form")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise LimitExceeded(f"{what} is {len(data)} bytes; the limit is {max_bytes}", reason="too_large")
    return FilePart(data, upload.filename, upload.content_type, options)


def form_file(form: FormData, name: str = "file") -> UploadFile:
    value = form.get(name)
    if not isinstance(value, UploadFile):
        raise invalid([FieldProblem(field=f"form.{name}", message="a file part is required")])
    return value


def form_text_fields(form: FormData, *, file_field: str = "file") -> dict[str, str]:
    """Every non-file field (a repeated field keeps its last value)."""
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name == file_field:
            continue
        if isinstance(value, UploadFile):
            raise invalid([FieldProblem(field=f"form.{name}", message="must be a plain field, not a file")])
        fields[name] = value
    return fields


def validate(model: type[M], data: Any, *, where: str) -> M:
    """`model` validated from `data`; raises a 422 `ApiError` naming each invalid field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc.errors())
        for problem in problems:
            problem.field = f"{where}.{problem.field}" if problem.field != "body" else where
        raise invalid(problems) from exc


def invalid(problems: list[FieldProblem]) -> ApiError:
    return ApiError(422, "invalid_request", "the request is invalid", problems=problems)


def request_body(*, json_schema: dict[str, Any], form_schema: dict[str, Any], description: str) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads a JSON or multipart body itself."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": json_schema},
                "multipart/form-data": {"schema": form_schema, "encoding": {"file": {"contentType": "*/*"}}},
            },
        }
    }
