"""``GET /v1/uploads`` (list with filters, cursor pagination) and ``GET /v1/review`` (the
review queue: flagged or review-band uploads without a human decision). Both show only the
key's tenants (`producers.listing`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from producers.http.auth import authorize
from producers.http.errors import ApiError, error_responses
from producers.http.models import ContentModality
from producers.http.state import ApiState, State
from producers.listing import ReviewState, UploadFilters, band_of, decode_cursor, encode_cursor, page_of, review_state
from shared.api_keys import TENANT_PATTERN, KeyScope, Role
from shared.events import Band, Frozen, Modality, UploadStatus
from shared.moderation.review import HumanReview, review_of
from shared.status import StatusRecord

router = APIRouter(prefix="/v1", tags=["review"])

MAX_LIMIT = 200
SCAN_BATCH = 500
# The most recent-index entries one request examines: a listing whose filters match little
# answers a short page with a cursor instead of walking the whole index in one request.
SCAN_MAX = 5000


class ListedUpload(StatusRecord):
    """A status record with where it stands in moderation."""

    band: Band | None = Field(None, description="the automatic decision: allow, review or block")
    review_state: ReviewState = Field(description="pending (in the queue), escalated, decided, none")
    review: HumanReview | None = Field(None, description="the human decision, once made")

    @classmethod
    def of(cls, record: StatusRecord) -> ListedUpload:
        return cls(
            **record.model_dump(),
            band=band_of(record),
            review_state=review_state(record),
            review=review_of(record.extra),
        )


class UploadPage(Frozen):
    items: list[ListedUpload] = Field(description="newest submission first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


def list_page(state: ApiState, filters: UploadFilters, cursor: str | None, limit: int) -> UploadPage:
    position = None
    if cursor is not None:
        position = decode_cursor(cursor)
        if position is None:
            raise ApiError(422, "invalid_cursor", "cursor is not one this API gave out")
    statuses = state.client.statuses
    shown: list[StatusRecord] = []
    scanned = 0
    while True:
        ids = statuses.recent_ids_page(before=position, count=SCAN_BATCH)
        if not ids:
            return UploadPage(items=[ListedUpload.of(r) for r in shown], next_cursor=None)
        found, last = page_of(statuses.records_at(ids), filters, limit - len(shown))
        shown += found
        scanned += len(ids)
        if len(shown) >= limit and last is not None:
            return UploadPage(items=[ListedUpload.of(r) for r in shown], next_cursor=encode_cursor(last))
        position = ids[-1]
        if len(ids) < SCAN_BATCH:
            return UploadPage(items=[ListedUpload.of(r) for r in shown], next_cursor=None)
        if scanned >= SCAN_MAX:
            return UploadPage(items=[ListedUpload.of(r) for r in shown], next_cursor=encode_cursor(position))


def key_tenants(caller: KeyScope, named: str | None) -> frozenset[str] | None:
    """The tenants a listing may show: the key's (None = every tenant, operators only),
    narrowed to `named`. A tenant outside the key answers an empty listing's 403."""
    if named is not None:
        if not caller.covers(named):
            raise ApiError(403, "tenant_forbidden", f"this API key may not act for tenant {named!r}")
        return frozenset({named})
    return None if caller.all_tenants else frozenset(caller.tenants)  # type: ignore[arg-type]


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="most items per page")]
Cursor = Annotated[str | None, Query(max_length=400, description="next_cursor of the previous page")]
TenantQuery = Annotated[str | None, Query(pattern=TENANT_PATTERN, description="only this one of the key's tenants")]
ModalityQuery = Annotated[ContentModality | None, Query(description="only uploads of this modality")]
BandQuery = Annotated[Band | None, Query(description="only uploads whose automatic decision is this band")]
CategoryQuery = Annotated[str | None, Query(max_length=64, description="only uploads flagged in this category")]
SourceQuery = Annotated[str | None, Query(max_length=64, description="only uploads from this source")]
# Times as ISO-8601 strings only: pydantic would also take a number as epoch seconds.
ISO_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?$"
SinceQuery = Annotated[
    str | None, Query(pattern=ISO_TIME, description="submitted at or after (ISO-8601; UTC if no zone)")
]
UntilQuery = Annotated[str | None, Query(pattern=ISO_TIME, description="submitted before (ISO-8601; UTC if no zone)")]


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO-8601 time of a query (UTC when it names no zone); 422 for an impossible one."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(422, "invalid_time", f"{name}: {exc}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.get(
    "/uploads",
    response_model=UploadPage,
    summary="List uploads",
    tags=["uploads"],
    responses=error_responses(401, 403, 422, 500, 503),
)
async def list_uploads(
    state: State,
    caller: Annotated[KeyScope, Depends(authorize(Role.READ))],
    status: Annotated[UploadStatus | None, Query(description="only uploads in this status")] = None,
    modality: ModalityQuery = None,
    band: BandQuery = None,
    flagged: Annotated[bool | None, Query(description="only flagged (true) or unflagged (false) uploads")] = None,
    category: CategoryQuery = None,
    source: SourceQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    review: Annotated[ReviewState | None, Query(description="only uploads in this review state")] = None,
    tenant: TenantQuery = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> UploadPage:
    """The key's uploads, newest submission first, that match every filter given. Records
    expire (``OMNIBIND_REDIS__STATUS_TTL_S``) and the index keeps the newest
    ``OMNIBIND_REDIS__RECENT_MAX``. A page may be short while `next_cursor` is not null:
    one request examines a bounded number of uploads."""
    filters = UploadFilters(
        tenants=key_tenants(caller, tenant),
        status=status,
        modality=Modality(modality.value) if modality else None,
        band=band,
        flagged=flagged,
        category=category,
        source=source,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        review=(review,) if review else None,
    )
    return await run_in_threadpool(list_page, state, filters, cursor, limit)


@router.get(
    "/review",
    response_model=UploadPage,
    summary="The review queue",
    responses=error_responses(401, 403, 422, 500, 503),
)
async def review_queue(
    state: State,
    caller: Annotated[KeyScope, Depends(authorize(Role.MODERATE))],
    modality: ModalityQuery = None,
    band: BandQuery = None,
    category: CategoryQuery = None,
    source: SourceQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    escalated: Annotated[bool, Query(description="also show escalated uploads")] = True,
    tenant: TenantQuery = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> UploadPage:
    """Indexed uploads that are flagged or in the review band and have no human decision yet
    (and, unless ``escalated=false``, those escalated), newest first. Decide each with
    ``POST /v1/uploads/{id}/decision``."""
    states = (ReviewState.PENDING, ReviewState.ESCALATED) if escalated else (ReviewState.PENDING,)
    filters = UploadFilters(
        tenants=key_tenants(caller, tenant),
        status=UploadStatus.INDEXED,
        modality=Modality(modality.value) if modality else None,
        band=band,
        category=category,
        source=source,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        review=states,
    )
    return await run_in_threadpool(list_page, state, filters, cursor, limit)
