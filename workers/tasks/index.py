"""Queue "index": idempotent upsert into the vector store, then the upload is "indexed"."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from shared.events import Moderation, Stage, UploadStatus
from shared.logs import upload_context
from shared.messages import EmbeddedUpload
from shared.queue import TaskName
from workers.app import app
from workers.handoff import decode_message
from workers.moderation import moderate_embedded, status_summary
from workers.records import build_record
from workers.resources import Resources
from workers.stage import run_stage

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
