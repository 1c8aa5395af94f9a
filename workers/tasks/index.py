"""Queue "index": idempotent upsert into the vector store, then the upload is "indexed";
and deletion of a record whose object was removed (`omnibind.delete`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry
from pydantic import ValidationError

from shared.errors import OmnibindError, TransientError
from shared.events import DeleteRequest, Moderation, Stage, UploadStatus
from shared.logs import upload_context
from shared.messages import EmbeddedUpload
from shared.queue import TaskName
from workers.app import app
from workers.deleter import delete_record
from workers.handoff import decode_message
from workers.moderation import moderate_embedded, status_summary
from workers.records import build_record
from workers.resources import Resources
from workers.stage import backoff_s, run_stage

log = logging.getLogger(__name__)


@app.task(name=TaskName.INDEX, bind=True)
def index(self: Task, doc: Any) -> None:
    resources = app.resources
    embedded = decode_message(resources, Stage.INDEX, doc, EmbeddedUpload.from_wire)
    if embedded is None:
        return
    with upload_context(embedded.event.id):
        run_stage(self, resources, Stage.INDEX, embedded.event, lambda: _index(resources, embedded))


def _index(resources: Resources, embedded: EmbeddedUpload) -> None:
    moderation = Moderation()
    if resources.settings.moderation.enabled:
        # The "moderate" step runs here, in front of the write, saving a queue hop: it is a
        # few hundred microseconds of numpy, and the record must carry its decision.
        moderation = moderate_embedded(resources.moderation, embedded)
        resources.status.advance(
            embedded.event.id,
            UploadStatus.MODERATED,
            flagged=moderation.flagged,
            categories=list(moderation.categories),
            extra={"moderation": status_summary(moderation)},
        )
        resources.metrics.reached(Stage.MODERATE, embedded.event.submitted_at)
    record = build_record(embedded, moderation)
    resources.indexer.write(record, timeout_s=resources.settings.worker.task_time_limit_s)
    indexed = resources.status.advance(
        embedded.event.id,
        UploadStatus.INDEXED,
        flagged=record.moderation.flagged,
        categories=list(record.moderation.categories),
    )
    if indexed:  # once per run: a redelivered index task finds the record indexed already
        resources.metrics.indexed(record.modality, record.moderation)
    ref = record.object
    log.info(
        "indexed %s %s (%s bytes) from %s",
        record.modality.value,
        record.content_type,
        record.size,
        f"{ref.bucket}/{ref.key}" if ref else "inline text",
    )


@app.task(name=TaskName.DELETE, bind=True)
def delete(self: Task, doc: Any) -> None:
    """Delete one upload's record (see `workers.deleter`). Transient failures and an upload
    still in flight are retried with backoff; the last attempt deletes whatever is there."""
    resources = app.resources
    try:
        request = DeleteRequest.model_validate(doc)
    except ValidationError as exc:
        log.error("undecodable delete request: %s", exc)
        resources.dead_letters.dead_letter(
            json.dumps(doc, default=str), "delete", type(exc).__name__, "invalid_event", str(exc), 1
        )
        return
    with upload_context(request.upload_id):
        _delete(self, resources, request)


def _delete(task: Task, resources: Resources, request: DeleteRequest) -> None:
    settings = resources.settings.worker
    last_attempt = task.request.retries >= settings.max_retries
    try:
        deleted = delete_record(resources.vectors, resources.status, request, wait_in_flight=not last_attempt)
    except TransientError as exc:
        if last_attempt:
            _dead_letter_delete(resources, request, exc, task.request.retries + 1)
            return
        countdown = backoff_s(task.request.retries, settings.retry_backoff_s, settings.retry_backoff_max_s)
        log.info("delete postponed %.1f s: %s", countdown, exc)
        try:
            raise task.retry(exc=exc, countdown=countdown, max_retries=settings.max_retries)
        except Retry:
            raise
        except Exception as publish_error:  # the broker itself is unreachable: keep the message
            raise Reject(f"cannot schedule retry: {publish_error}", requeue=True) from publish_error
    except OmnibindError as exc:
        _dead_letter_delete(resources, request, exc, task.request.retries + 1)
        return
    log.info("record %s (%s)", "deleted" if deleted else "already absent", request.reason)


def _dead_letter_delete(resources: Resources, request: DeleteRequest, exc: OmnibindError, attempts: int) -> None:
    log.warning("delete failed for good: %s: %s", exc.reason, exc.message)
    resources.dead_letters.dead_letter(
        request.model_dump_json(),
        "delete",
        type(exc).__name__,
        exc.reason,
        exc.message,
        attempts,
        upload_id=request.upload_id,
    )
