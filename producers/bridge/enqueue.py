"""Handing bridged events to the pipeline, once per submission.

The bridge acknowledges an event only after `Ingestor.ingest` returned, so a crash in
between delivers the event again. `ingest` starts a run only when no run of the upload is
unfinished and this very submission (same id and ``submitted_at``) was not recorded before
(`StatusStore.start_run`, one atomic step): another submission of an id in flight sends
nothing. A repeat of the very submission whose run still says ``queued`` is sent again: the
bridge may have died between recording the run and sending its message (the stall sweeper
would find it too, but only after ``OMNIBIND_WORKER__STALL_TIMEOUT_S``).

Deletions are recorded as pending before their message is sent (`Client.delete`), so a lost
delete message is sent again the same way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from enum import StrEnum

import redis
from kombu.exceptions import OperationalError

from producers.client import Client
from shared.events import DeleteRequest, UploadEvent, UploadStatus
from shared.redis_client import RedisUnavailable
from shared.status import StatusRecord

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    ENQUEUED = "enqueued"
    DUPLICATE = "duplicate"


@contextlib.contextmanager
def broker_errors(doing: str) -> Iterator[None]:
    """Re-raise a failed publish (kombu gives up after its own retries) as `RedisUnavailable`,
    as the producer client does: the broker is Redis."""
    try:
        yield
    except (OperationalError, redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(f"Celery broker unavailable while {doing}: {exc}") from exc


def is_same_submission(record: StatusRecord, event: UploadEvent) -> bool:
    return record.submitted_at is not None and record.submitted_at == event.submitted_at


class Ingestor:
    """Enqueues uploads and deletions through a producer `Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def ingest(self, event: UploadEvent) -> Outcome:
        """Enqueue `event` unless this very submission is already being processed or done.

        Raises `RedisUnavailable` (transient: nothing was lost, call
        again later).
        """
        with broker_errors(f"enqueueing upload {event.id}"):
            start = self._client.enqueue_run(event)
            if start.started:
                return Outcome.ENQUEUED
            if start.status is UploadStatus.QUEUED and self._recorded_but_maybe_unsent(event):
                # The bridge died between recording this submission and sending it: send it
                # now rather than after the stall timeout (a second message of one run is
                # harmless: stages are idempotent and one result is announced per run).
                self._client.send_to_pipeline(event)
                return Outcome.ENQUEUED
        return Outcome.DUPLICATE

    def _recorded_but_maybe_unsent(self, event: UploadEvent) -> bool:
        record = self._client.statuses.get(event.id)
        return record is not None and record.status is UploadStatus.QUEUED and is_same_submission(record, event)

    def delete(self, request: DeleteRequest) -> None:
        """Record the pending deletion and send the delete task (index queue). Raises
        `RedisUnavailable`."""
        with broker_errors(f"enqueueing the deletion of upload {request.upload_id}"):
            self._client.delete(request)
