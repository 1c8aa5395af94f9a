"""Handing bridged events to the pipeline, once per submission.

The bridge acknowledges an event only after `Ingestor.ingest` returned, so a crash in
between delivers the event again. `ingest` recognises that repeat by the upload's status
record: the same submission (same id and ``submitted_at``) that already moved past
``queued`` is not enqueued again. A repeat whose record still says ``queued`` is enqueued
once more, because the crash may have come between writing the record and sending the
message; a duplicate message is harmless (status transitions are forward-only, the vector
write is an idempotent upsert, and exactly one result is announced per run).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from enum import StrEnum

import redis
from kombu.exceptions import OperationalError

from producers.client import Client
from shared.errors import TransientError
from shared.events import DeleteRequest, UploadEvent, UploadStatus
from shared.queue import QueueName, TaskName
from shared.status import StatusRecord

log = logging.getLogger(__name__)


class BrokerUnavailable(TransientError):
    """The Celery broker did not take the message; retry later."""

    reason = "broker_unavailable"


class Outcome(StrEnum):
    ENQUEUED = "enqueued"
    DUPLICATE = "duplicate"


@contextlib.contextmanager
def broker_errors(doing: str) -> Iterator[None]:
    """Re-raise a failed publish (kombu gives up after its own retries) as `BrokerUnavailable`."""
    try:
        yield
    except (OperationalError, redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"Celery broker unavailable while {doing}: {exc}") from exc


def is_same_submission(record: StatusRecord, event: UploadEvent) -> bool:
    return record.submitted_at is not None and record.submitted_at == event.submitted_at


class Ingestor:
    """Enqueues uploads and deletions through a producer `Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def ingest(self, event: UploadEvent) -> Outcome:
        """Enqueue `event` unless this very submission is already being processed or done.

        Raises `RedisUnavailable` / `BrokerUnavailable` (transient: nothing was lost, call
        again later).
        """
        record = self._client.statuses.get(event.id)
        if record is not None and is_same_submission(record, event) and record.status is not UploadStatus.QUEUED:
            return Outcome.DUPLICATE
        with broker_errors(f"enqueueing upload {event.id}"):
            self._client.enqueue(event)
        return Outcome.ENQUEUED

    def delete(self, request: DeleteRequest) -> None:
        """Send the delete task (index queue). Raises `BrokerUnavailable`."""
        with broker_errors(f"enqueueing the deletion of upload {request.upload_id}"):
            self._client.celery.send_task(
                TaskName.DELETE,
                args=[request.model_dump(mode="json")],
                queue=QueueName.INDEX,
                ignore_result=True,  # fire and forget: no result-channel SUBSCRIBE per message
                argsrepr=f"<delete {request.upload_id}>",
                kwargsrepr="{}",
            )
