"""Errors as JSON: every error response is an `ErrorBody` with one of our `reason` codes.

omnibind errors map to HTTP statuses by class (`status_of`); request validation errors,
Starlette's own errors (404 for an unknown path, 405...) and unexpected exceptions are
rendered the same way, so clients only ever parse one error shape. Unexpected exceptions
are logged with their traceback and answered with a bare ``internal_error``: no internals
leak into responses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import (
    Busy,
    LimitExceeded,
    OmnibindError,
    PermanentError,
    TransientError,
    UnsupportedMedia,
)

log = logging.getLogger(__name__)

_REASON_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "busy",
    503: "unavailable",
}


class FieldProblem(BaseModel):
    field: str = Field(description="where: body.object.key, query.k, form.file...")
    message: str


class ErrorBody(BaseModel):
    """What every error response carries."""

    reason: str = Field(description="stable, machine-readable code: busy, invalid_event, corrupt_media...")
    message: str = Field(description="for people")
    problems: list[FieldProblem] = Field(default_factory=list, description="invalid fields, for reason invalid_request")


class ApiError(StarletteHTTPException):
    """An HTTP-level refusal raised by our own code (auth, limits, content negotiation)."""

    def __init__(
        self,
        status_code: int,
        reason: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        problems: list[FieldProblem] | None = None,
    ) -> None:
        super().__init__(status_code, message, headers)
        self.reason = reason
        self.problems = problems or []


def status_of(error: OmnibindError) -> int:
    """The HTTP status for an omnibind error."""
    if isinstance(error, Busy):
        return 429
    if isinstance(error, LimitExceeded):
        return 413
    if isinstance(error, UnsupportedMedia):
        return 415
    if isinstance(error, PermanentError):
        return 422
    if isinstance(error, TransientError):
        return 503
    return 500  # ConfigError, CheckpointError: the server is misconfigured


def error_response(
    status_code: int,
    reason: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    problems: list[FieldProblem] | None = None,
) -> JSONResponse:
    body = ErrorBody(reason=reason, message=message, problems=problems or [])
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=headers)


def validation_problems(errors: Any) -> list[FieldProblem]:
    """Pydantic/FastAPI validation errors as `FieldProblem`s."""
    return [
        FieldProblem(field=".".join(str(part) for part in err.get("loc", ())) or "body", message=str(err.get("msg")))
        for err in errors
    ]


def install_error_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Render every error as an `ErrorBody` (see the module docstring)."""

    @app.exception_handler(OmnibindError)
    async def omnibind_error(request: Request, exc: OmnibindError) -> JSONResponse:
        status_code = status_of(exc)
        if status_code == 500:  # ConfigError and kin: details are for the operator's log only
            log.error("%s %s failed: %s: %s", request.method, request.url.path, exc.reason, exc.message)
            return error_response(status_code, exc.reason, "the server is misconfigured; see its log")
        if status_code == 503:
            log.warning("%s %s: %s: %s", request.method, request.url.path, exc.reason, exc.message)
        # Our messages name no secrets (Redis URLs are redacted where they are raised).
        wait_s = getattr(exc, "retry_after_s", None) or retry_after_s  # a quota knows when it resets
        headers = {"Retry-After": str(wait_s)} if status_code in (429, 503) else None
        return error_response(status_code, exc.reason, exc.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            422, "invalid_request", "the request is invalid", problems=validation_problems(exc.errors())
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return error_response(
                exc.status_code, exc.reason, str(exc.detail), headers=exc.headers, problems=exc.problems
            )
        reason = _REASON_OF_STATUS.get(exc.status_code, "http_error")
        return error_response(exc.status_code, reason, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed unexpectedly", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route may answer."""
    descriptions = {
        400: "Malformed request (bad JSON, bad multipart body)",
        401: "Missing or invalid API key",
        403: "The API key lacks the role this route needs, or the tenant named is not one of its tenants",
        404: "Not found",
        409: "The upload is not in a state this allows (in flight, not indexed)",
        413: "Request or upload too large",
        415: "Unsupported content type or media format",
        422: "Invalid request or upload",
        429: "The pipeline applies backpressure; retry after Retry-After seconds",
        500: "Server misconfigured or internal error",
        503: "A dependency (Redis, object store, workers) is unavailable; retry after Retry-After seconds",
    }
    return {status: {"model": ErrorBody, "description": descriptions[status]} for status in statuses}
