"""Dead letters: find them, and bring their uploads home (`omnibind dead [--retry]`).

A dead letter (``{prefix}:dead``, see `shared.streams.DeadLetterStream`) holds the upload
event of a message that failed for good: a permanent error, retries used up (storage down
too long), or a poison message that crashed its worker on every delivery. Retrying one
runs the whole pipeline again for that upload, in this order:

1. the status record starts a new run (`StatusStore.requeue`; `create` if it expired), which
   also resets the upload's delivery counters;
2. the event is sent to the first stage again;
3. the dead letter is deleted.

A retry interrupted between the steps leaves the dead letter in place and can simply be run
again: a record left "queued" is sent once more (stages are idempotent, a duplicate message
costs one extra run, never a second record).

A dead letter of a deletion (stage ``delete``: the vector store stayed down past the retry
budget, or the delete crashed its worker every time) holds its `DeleteRequest`. Retrying it
records the pending deletion again (`shared.deletions`, so the stall sweeper resends it if
its message is lost), sends the delete message, then deletes the letter; interrupted, it is
simply run again (deleting twice is a no-op).

A letter the ingest bridge refused for its tenant (reason ``tenant_mismatch``) is never
retried: its event names a tenant, object or id its source may not act for, and sending it
straight to the pipeline would bypass that check. Fix the event and add it to its source
again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.audit import Action, AuditLog
from shared.deletions import PendingDeletions, send_delete
from shared.events import DeleteRequest, UploadEvent, UploadStatus
from shared.status import StatusStore
from shared.streams import DeadLetter, DeadLetterStream
from shared.tenancy import tenant_of_id

if TYPE_CHECKING:  # workers import this module too (the sweeper's re-drive): no client there
    from producers.client import Client

PAGE = 500
DELETE_STAGE = "delete"  # the stage of a deletion's dead letter (workers.tasks.index)
# Reasons whose letters only their source may take back (see the module docstring).
SOURCE_ONLY_REASONS = frozenset({"tenant_mismatch"})


class Outcome(StrEnum):
    REQUEUED = "requeued"  # a new run started and was sent (a deletion: recorded and sent again)
    RESENT = "resent"  # the record was already queued (an earlier retry stopped half-way): sent again
    IN_FLIGHT = "in flight"  # the upload is being processed again already: dead letter dropped
    UNREADABLE = "unreadable"  # the dead letter holds no valid upload event: kept
    REFUSED = "refused"  # refused by its source's tenancy: kept, to be fixed and re-added at the source


@dataclass(frozen=True)
class Retried:
    entry_id: str
    upload_id: str | None
    outcome: Outcome
    detail: str = ""


def iter_dead_letters(client: Client) -> Iterator[DeadLetter]:
    """Every dead letter, oldest first, read page by page."""
    stream = client.dead_letters
    start = "-"
    while True:
        page = stream.entries(PAGE, start=start)
        yield from page
        if len(page) < PAGE:
            return
        start = f"({page[-1].entry_id}"  # exclusive: the next page starts after this one


def select_dead_letters(client: Client, wanted: Iterable[str] = ()) -> tuple[list[DeadLetter], list[str]]:
    """The dead letters named by `wanted` (entry ids or upload ids; all of them when empty),
    as they are now (a snapshot: letters added later are not included), and the names that
    matched none."""
    names = list(wanted)
    letters = list(iter_dead_letters(client))
    if not names:
        return letters, []
    chosen = [letter for letter in letters if letter.entry_id in names or letter.upload_id in names]
    matched = {letter.entry_id for letter in chosen} | {letter.upload_id for letter in chosen}
    return chosen, [name for name in names if name not in matched]


def retry_dead_letter(client: Client, letter: DeadLetter, *, actor: str | None = None) -> Retried:
    """Run `letter`'s upload through the pipeline again, or send its deletion again (module
    docstring); with `actor` (a person's retry) the retry and its outcome are audited.
    Raises `TransientError` when Redis is unavailable (nothing is lost: the letter stays)."""
    retried = _retry(client, letter)
    if actor is not None:
        AuditLog.from_settings(client.redis, client.settings).record(
            Action.DEAD_LETTER_RETRY,
            actor=actor,
            target=letter.entry_id,
            tenant=tenant_of_id(letter.upload_id or ""),
            detail={"upload_id": letter.upload_id, "stage": letter.stage, "outcome": retried.outcome.value},
        )
    return retried


def _retry(client: Client, letter: DeadLetter) -> Retried:
    if letter.stage == DELETE_STAGE:
        return resend_deletion(
            client.deletions,
            client.dead_letters,
            lambda request, token: send_delete(client.celery, request, token),
            letter,
        )
    return requeue_dead_letter(client.statuses, client.dead_letters, client.send_to_pipeline, letter)


def resend_deletion(
    deletions: PendingDeletions,
    dead_letters: DeadLetterStream,
    send: Callable[[DeleteRequest, str], None],
    letter: DeadLetter,
) -> Retried:
    """`retry_dead_letter` for a deletion's dead letter, with its parts given: the pending
    deletions, the dead-letter stream and what sends a recorded deletion (request, token)."""
    try:
        request = DeleteRequest.model_validate_json(letter.event)
    except ValidationError as exc:
        return Retried(letter.entry_id, letter.upload_id, Outcome.UNREADABLE, f"not a delete request: {_first(exc)}")
    send(request, deletions.record(request))
    dead_letters.delete(letter.entry_id)
    return Retried(letter.entry_id, request.upload_id, Outcome.REQUEUED, "deletion sent again")


def _first(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{first['msg']} at {'.'.join(str(p) for p in first['loc']) or 'top level'}"


def requeue_dead_letter(
    statuses: StatusStore, dead_letters: DeadLetterStream, send: Callable[[UploadEvent], None], letter: DeadLetter
) -> Retried:
    """`retry_dead_letter` with its parts given: the status store, the dead-letter stream and
    what sends an event to the first stage (the stall sweeper's re-drive uses the workers'
    own)."""
    if letter.reason in SOURCE_ONLY_REASONS:
        detail = "refused by its source's tenancy: fix the event and add it to its source again"
        return Retried(letter.entry_id, letter.upload_id, Outcome.REFUSED, detail)
    try:
        event = UploadEvent.model_validate_json(letter.event)
    except ValidationError as exc:
        return Retried(letter.entry_id, letter.upload_id, Outcome.UNREADABLE, f"not an upload event: {_first(exc)}")
    if statuses.requeue(event.id, event) or statuses.create(event):
        outcome = Outcome.REQUEUED
    else:
        record = statuses.get(event.id)
        if record is not None and record.status is not UploadStatus.QUEUED:
            dead_letters.delete(letter.entry_id)
            return Retried(letter.entry_id, event.id, Outcome.IN_FLIGHT, f"now {record.status.value}")
        outcome = Outcome.RESENT
    send(event)
    dead_letters.delete(letter.entry_id)
    return Retried(letter.entry_id, event.id, outcome)
