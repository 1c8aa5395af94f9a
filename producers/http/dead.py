"""``GET /v1/dead-letters`` and ``POST /v1/dead-letters/{entry_id}/retry``: uploads that
failed for good, within the key's tenants (as ``omnibind dead [--retry]``).

A dead letter belongs to the tenant its upload event names, or, failing that, the tenant
prefix of its upload id (``acme:...``); a letter that names neither (an unreadable message)
is shown to operator keys only."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from producers.dead_letters import Outcome, retry_dead_letter
from producers.http.auth import authorize
from producers.http.errors import ApiError, error_responses
from producers.http.state import ApiState, State
from producers.http.tenancy import SEPARATOR
from shared.api_keys import KeyScope, Role
from shared.audit import key_actor
from shared.events import Frozen
from shared.streams import DeadLetter

router = APIRouter(prefix="/v1", tags=["dead letters"])

MAX_LIMIT = 200
SCAN_BATCH = 500
SCAN_MAX = 5000
ENTRY_ID_PATTERN = r"^[0-9]{1,15}-[0-9]{1,18}$"  # within what Redis parses (64-bit parts)


def tenant_of(letter: DeadLetter) -> str | None:
    """The tenant `letter` belongs to (module docstring), None when it names none (pure)."""
    try:
        event = json.loads(letter.event)
    except ValueError:
        event = None
    if isinstance(event, dict) and isinstance(event.get("tenant"), str):
        return str(event["tenant"])
    if letter.upload_id and SEPARATOR in letter.upload_id:
        return letter.upload_id.split(SEPARATOR, 1)[0]
    return None


class DeadLetterPage(Frozen):
    items: list[DeadLetter] = Field(description="oldest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class RetryOutcome(Frozen):
    entry_id: str
    upload_id: str | None
    outcome: Outcome = Field(description="requeued, resent, in flight (dropped), unreadable (kept)")
    detail: str = ""


def _page(state: ApiState, caller: KeyScope, cursor: str | None, limit: int) -> DeadLetterPage:
    """Up to `limit` of the key's letters after `cursor`, examining at most `SCAN_MAX`."""
    items: list[DeadLetter] = []
    start = "-" if cursor is None else f"({cursor}"  # exclusive: after the cursor's entry
    scanned = 0
    while True:
        page = state.client.dead_letters.entries(SCAN_BATCH, start=start)
        for letter in page:
            if caller.covers(tenant_of(letter)):
                items.append(letter)
                if len(items) >= limit:
                    return DeadLetterPage(items=items, next_cursor=letter.entry_id)
        scanned += len(page)
        if len(page) < SCAN_BATCH:
            return DeadLetterPage(items=items, next_cursor=None)
        start = f"({page[-1].entry_id}"
        if scanned >= SCAN_MAX:  # few of this key's among many: a short page, and a cursor
            return DeadLetterPage(items=items, next_cursor=page[-1].entry_id)


@router.get(
    "/dead-letters",
    response_model=DeadLetterPage,
    summary="List dead letters",
    responses=error_responses(401, 403, 422, 500, 503),
)
async def list_dead_letters(
    state: State,
    caller: Annotated[KeyScope, Depends(authorize(Role.READ))],
    cursor: Annotated[
        str | None, Query(pattern=ENTRY_ID_PATTERN, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="most items per page")] = 50,
) -> DeadLetterPage:
    """The key's dead letters, oldest first: the stage, reason, error class, attempts and
    message of each failure, and the original message (`event`) a retry sends again."""
    return await run_in_threadpool(_page, state, caller, cursor, limit)


@router.post(
    "/dead-letters/{entry_id}/retry",
    response_model=RetryOutcome,
    summary="Retry a dead letter",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def retry(
    entry_id: Annotated[str, Path(pattern=ENTRY_ID_PATTERN, description="the dead letter's entry id")],
    state: State,
    caller: Annotated[KeyScope, Depends(authorize(Role.INGEST))],
) -> RetryOutcome:
    """Run the dead letter's upload through the pipeline again (a new run of its status
    record) and remove the letter; follow it at ``GET /v1/uploads/{id}``. Fix the cause
    first. An unreadable letter is kept (outcome ``unreadable``)."""

    def run() -> RetryOutcome:
        letter = state.client.dead_letters.get(entry_id)
        if letter is None or not caller.covers(tenant_of(letter)):
            raise ApiError(404, "dead_letter_not_found", f"no dead letter {entry_id}")
        retried = retry_dead_letter(state.client, letter, actor=key_actor(caller.key_id))
        return RetryOutcome(
            entry_id=retried.entry_id, upload_id=retried.upload_id, outcome=retried.outcome, detail=retried.detail
        )

    return await run_in_threadpool(run)
