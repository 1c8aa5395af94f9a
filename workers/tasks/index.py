"""Queue "index": idempotent upsert into the vector store, then the upload is "indexed";
and deletion of a record whose object was removed (`omnibind.delete`)."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject, Retry
from pydantic import ValidationError

from shared.backoff import full_jitter_s
from shared.deletions import DELETION_HEADER, PendingDeletions, deletion_headers, deletion_token
from shared.errors import OmnibindError, TransientError
from shared.events import DeleteRequest, Moderation, Stage, UploadEvent
from shared.logs import upload_context
from shared.messages import EmbeddedUpload
from shared.queue import TaskName, is_sparse
from shared.speech.transcript import status_transcript
from shared.streams import dead_letter_fields
from workers.app import app
from workers.deleter import delete_record
from workers.handoff import decode_message
from workers.moderation import moderate_embedded, status_summary
from workers.records import build_record
from workers.resources import Resources
from workers.stage import FAILING_SINCE_HEADER, PoisonMessage, advance, retry_budget, run_stage

log = logging.getLogger(__name__)


@app.task(name=TaskName.INDEX, bind=True)
def index(self: Task, doc: Any) -> None:
    resources = app.resources
    embedded = decode_message(resources, Stage.INDEX, doc, EmbeddedUpload.from_wire)
    if embedded is None:
        return
    with upload_context(embedded.event.id):
        run_stage(
            self,
            resources,
            Stage.INDEX,
            embedded.event,
            lambda: _index(resources, embedded, urgent=is_sparse(self.request.headers)),
        )


def _index(resources: Resources, embedded: EmbeddedUpload, *, urgent: bool = False) -> None:
    """`urgent`: a sparse tenant's upload, whose write waits for no company."""
    finished = resources.status.get(embedded.event.id)
    if finished is not None and finished.terminal:
        # A redelivery after the run ended (its worker died before the ack, or a duplicate):
        # the record is written already, and a deletion may have removed it since, which a
        # second write would undo (3 of 200 deleted uploads came back in a chaos run).
        log.info("index: upload is %s already; nothing to write", finished.status.value)
        return
    moderation = Moderation()
    if resources.settings.moderation.enabled:
        # The "moderate" step runs here, in front of the write, saving a queue hop: it is a
        # few hundred microseconds of numpy, and the record must carry its decision.
        moderation = moderate_embedded(resources.moderation, embedded)
        record_moderation(resources, embedded.event, moderation)
    record = build_record(embedded, moderation)
    resources.indexer.write(record, timeout_s=resources.settings.worker.task_time_limit_s, urgent=urgent)
    indexed = advance(
        resources,
        Stage.INDEX,
        embedded.event,
        flagged=record.moderation.flagged,
        categories=list(record.moderation.categories),
        extra={"transcript": status_transcript(embedded.speech.transcript)} if embedded.speech is not None else None,
    )
    if indexed:  # once per run: a redelivered index task finds the record indexed already
        resources.metrics.indexed(record.modality, record.moderation)
    if embedded.join_token is not None:
        _forget_join(resources, embedded.event.id, embedded.join_token)
    ref = record.object
    log.info(
        "indexed %s %s (%s bytes) from %s",
        record.modality.value,
        record.content_type,
        record.size,
        f"{ref.bucket}/{ref.key}" if ref else "inline text",
    )


def _forget_join(resources: Resources, upload_id: str, token: str) -> None:
    """Drop the run's join hash (Redis memory); left to its TTL when Redis refuses now."""
    try:
        resources.moderation.join.forget(upload_id, token)
    except TransientError as exc:
        log.warning("index: the join hash stays until it expires: %s", exc)


def record_moderation(resources: Resources, event: UploadEvent, moderation: Moderation) -> None:
    """Move the upload to moderated with its decision and, once per run, record its latency:
    a redelivered message finds the upload moderated already and records nothing."""
    advance(
        resources,
        Stage.MODERATE,
        event,
        flagged=moderation.flagged,
        categories=list(moderation.categories),
        extra={"moderation": status_summary(moderation)},
    )


@app.task(name=TaskName.DELETE, bind=True)
def delete(self: Task, doc: Any) -> None:
    """Delete one upload's record (see `workers.deleter`). Transient failures and an upload
    still in flight are retried with backoff; the last attempt deletes whatever is there."""
    handle_delete(self, app.resources, doc)


def handle_delete(task: Task, resources: Resources, doc: Any) -> None:
    """Settle one delete message: done, retried, or dead-lettered — and the pending deletion
    (`shared.deletions`) forgotten in the same step. When that outcome cannot be recorded
    (Redis down, or refusing writes) the message is rejected back to its queue, never acked:
    Celery acks a task that raised (``task_acks_on_failure``)."""
    try:
        request = DeleteRequest.model_validate(doc)
    except ValidationError as exc:
        log.error("undecodable delete request: %s", exc)
        letter = dead_letter_fields(
            json.dumps(doc, default=str), "delete", type(exc).__name__, "invalid_event", str(exc), 1
        )
        _settle(resources, _token_of(task, None), letter)
        return
    with upload_context(request.upload_id):
        _delete(task, resources, request, _token_of(task, request))


def _deletions(resources: Resources) -> PendingDeletions:
    return PendingDeletions.from_settings(resources.redis, resources.settings)


def _token_of(task: Task, request: DeleteRequest | None) -> str | None:
    """The pending deletion a message settles: its header, else the request's own token."""
    token = (task.request.headers or {}).get(DELETION_HEADER)
    if isinstance(token, str):
        return token
    return deletion_token(request) if request is not None else None


def _settle(resources: Resources, token: str | None, dead_letter: dict[str, str] | None) -> None:
    """Forget the pending deletion `token`, writing `dead_letter` with it."""
    try:
        _deletions(resources).done(token, dead_letter)
    except (OmnibindError, redis.RedisError) as exc:
        raise Reject(f"cannot record the end of a deletion: {exc}", requeue=True) from exc


def _delete(task: Task, resources: Resources, request: DeleteRequest, token: str | None) -> None:
    settings = resources.settings.worker
    attempts = task.request.retries + 1
    crashes = _crashes(resources, token, task.request.retries) if token is not None else 0
    if crashes >= settings.max_deliveries:
        poison = PoisonMessage(f"delete was delivered {crashes + 1} times, its worker crashed each time before")
        _settle(resources, token, _dead_letter_delete(request, poison, attempts))
        return
    since_ms, left_s = retry_budget(task, settings.retry_for_s)
    last_attempt = left_s <= 0 or task.request.retries >= settings.max_retries
    try:
        deleted = delete_record(resources.vectors, resources.status, request, wait_in_flight=not last_attempt)
    except TransientError as exc:
        if last_attempt:
            _settle(resources, token, _dead_letter_delete(request, exc, attempts))
            return
        wait_s = full_jitter_s(task.request.retries + 1, settings.retry_backoff_s, settings.retry_backoff_max_s)
        countdown = min(left_s, wait_s)
        log.info("delete postponed %.1f s: %s", countdown, exc)
        try:
            if token is not None:  # progress first: the sweeper must not take the retry for lost
                _deletions(resources).touch(token)
            raise task.retry(
                exc=exc,
                countdown=countdown,
                max_retries=settings.max_retries,
                headers={**(deletion_headers(token) if token is not None else {}), FAILING_SINCE_HEADER: since_ms},
            )
        except Retry:
            raise
        except Exception as publish_error:  # the broker itself is unreachable: keep the message
            raise Reject(f"cannot schedule retry: {publish_error}", requeue=True) from publish_error
    except OmnibindError as exc:
        _settle(resources, token, _dead_letter_delete(request, exc, attempts))
        return
    _settle(resources, token, None)
    log.info("record %s (%s)", "deleted" if deleted else "already absent", request.reason)


def _crashes(resources: Resources, token: str, retries: int) -> int:
    """Deliveries of this deletion's messages with this retry count that did not finish, this
    one not included: a message that kills its worker comes back with the same count, while
    copies left by a kill between a retry and its ack count once per retry each
    (`shared.deletions`)."""
    try:
        deliveries = _deletions(resources).count_delivery(token, retries)
    except OmnibindError as exc:
        raise Reject(f"cannot count deliveries: {exc}", requeue=True) from exc
    return deliveries - 1


def _dead_letter_delete(request: DeleteRequest, exc: OmnibindError, attempts: int) -> dict[str, str]:
    log.warning("delete failed for good: %s: %s", exc.reason, exc.message)
    return dead_letter_fields(
        request.model_dump_json(),
        "delete",
        type(exc).__name__,
        exc.reason,
        exc.message,
        attempts,
        upload_id=request.upload_id,
    )
