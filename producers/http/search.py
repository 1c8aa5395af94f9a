"""``POST /v1/search``: cross-modal search by text (JSON) or by an image/audio/video file (multipart)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from producers.http.auth import authorize
from producers.http.bodies import body_kind, read_file_form, read_json, request_body, validate
from producers.http.errors import error_responses
from producers.http.models import MAX_K, ContentModality, Hit, SearchOptions, SearchResults, TextSearch
from producers.http.state import State
from producers.http.tenancy import search_scope
from shared.api_keys import TENANT_PATTERN, KeyScope, Role
from shared.backpressure import check_backpressure
from shared.events import Modality
from shared.media.sniff import VIDEO_CONTAINERS, sniff
from shared.media.text import check_text_length, decode_text

router = APIRouter(prefix="/v1", tags=["search"])


def _form_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": "an image, audio or video file (or a text file)",
            },
            "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
            "modality": {"type": "string", "enum": [m.value for m in ContentModality]},
            "flagged": {"type": "boolean"},
            "tenant": {"type": "string", "pattern": TENANT_PATTERN, "description": "one of the key's tenants"},
        },
    }


@router.post(
    "/search",
    response_model=SearchResults,
    summary="Search by text, image, audio or video",
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503),
    openapi_extra=request_body(
        json_schema={"$ref": "#/components/schemas/TextSearch"},
        form_schema=_form_schema(),
        description="application/json: a text query; multipart/form-data: a query file, with the same options.",
    ),
)
async def search(
    request: Request, state: State, caller: Annotated[KeyScope, Depends(authorize(Role.SEARCH))]
) -> SearchResults:
    """The `k` indexed uploads (of any modality) nearest to the query, best first. The
    workers embed the query (this process loads no model), so a search needs live cpu and
    gpu workers; 503 when none answers within ``OMNIBIND_API__SEARCH_TIMEOUT_S``."""
    kind = body_kind(request)
    # A search's query goes through the cpu queue: behind a backlog it could only time out.
    await run_in_threadpool(check_backpressure, state.client.redis, state.settings)
    limits = state.settings.limits
    query: dict[str, Any]
    if kind == "json":
        text_search = validate(TextSearch, await read_json(request), where="body")
        options: SearchOptions = text_search
        query = {"text": check_text_length(text_search.text, max_chars=limits.max_text_chars)}
        modality = ContentModality.TEXT
    else:
        part = await read_file_form(request, SearchOptions, max_bytes=limits.max_bytes, what="query file")
        options = part.fields
        modality, query = _file_query(part.data, limits.max_text_chars)

    # The key's tenants, narrowed to the one named: never wider than the key.
    filters = options.filters(search_scope(caller, options.tenant))

    def run() -> SearchResults:
        hits = state.client.search(**query, k=options.k, filters=filters, timeout_s=state.settings.api.search_timeout_s)
        return SearchResults(query=modality, hits=[Hit.of(hit) for hit in hits])

    return await run_in_threadpool(run)


def _file_query(data: bytes, max_text_chars: int) -> tuple[ContentModality, dict[str, Any]]:
    """What the query file is (by its bytes) and the `Client.search` argument for it."""
    sniffed = sniff(data)
    if sniffed.format in VIDEO_CONTAINERS and _has_video(data, sniffed.format):
        return ContentModality.VIDEO, {"video": data}
    if sniffed.modality is Modality.IMAGE:
        return ContentModality.IMAGE, {"image": data}
    if sniffed.modality is Modality.AUDIO:
        return ContentModality.AUDIO, {"audio": data}
    return ContentModality.TEXT, {"text": decode_text(data, max_chars=max_text_chars)}


def _has_video(data: bytes, format: str) -> bool:
    """Whether a container holds a video stream (PyAV reads its headers; imported here only,
    so the API's start-up does not pay for FFmpeg)."""
    from shared.media.video import has_video_stream

    return has_video_stream(data, format)
