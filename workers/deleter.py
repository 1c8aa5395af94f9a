"""Deleting an upload's vector record when its object is gone (task ``omnibind.delete``).

A deletion can overtake the upload it deletes: the object is removed while its run is still
between preprocessing and indexing, and the index write would then put the record back. So
a delete waits (by being retried) while the upload's run is in flight, and deletes only once
the run has ended; a run whose object vanished before preprocessing fails on its own with
``object_not_found`` and leaves nothing to delete.

A deletion can also be overtaken by a new write of the same key (delete, then put again):
the upload id is the same, so without a time the delete would remove the new object's
record. A request that carries `DeleteRequest.removed_at` therefore keeps a record whose
upload was submitted after the removal, judged by the status record's ``submitted_at`` (the
latest submission) and by the vector record's ``created_at`` (the submission it embeds: a
new write sent while an older run was in flight leaves the status at the older one).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from shared.errors import TransientError
from shared.events import DeleteRequest
from shared.status import StatusStore
from shared.vectors.store import VectorStore

log = logging.getLogger(__name__)


class UploadInFlight(TransientError):
    """The upload to delete is still being processed; delete once its run has ended."""

    reason = "upload_in_flight"


def submitted_after_removal(request: DeleteRequest, submitted_at: datetime | None) -> bool:
    """True when an upload submitted at `submitted_at` is newer than the removal `request`
    reports, so the removal must not delete its record (pure). False when either time is
    unknown, or at a tie (the removal then wins: both cannot be ordered)."""
    if request.removed_at is None or submitted_at is None:
        return False
    return _utc(submitted_at) > _utc(request.removed_at)


def _utc(moment: datetime) -> datetime:
    """`moment` comparable with any other: a naive time is taken as UTC (as the stores do)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def delete_record(
    vectors: VectorStore, statuses: StatusStore, request: DeleteRequest, *, wait_in_flight: bool = True
) -> bool:
    """Delete the record of `request.upload_id`; True if one was deleted, False if there was
    none, it embeds another object version than `request.object_version_id`, or its upload
    was submitted after `request.removed_at` (see the module doc).

    Raises `UploadInFlight` while a run of the upload is in flight (unless `wait_in_flight`
    is False: the last attempt deletes whatever is there), `VectorStoreUnavailable` /
    `RedisUnavailable` when a backend is down.
    """
    status = statuses.get(request.upload_id)
    if status is not None and submitted_after_removal(request, status.submitted_at):
        log.info("kept the record: upload %s was submitted again after the removal", request.upload_id)
        return False
    if wait_in_flight and status is not None and not status.terminal:
        raise UploadInFlight(f"upload {request.upload_id} is {status.status.value}; deleting once it has finished")
    if request.object_version_id is not None or request.removed_at is not None:
        current = vectors.get(request.upload_id)
        if current is None:
            return False
        if _keeps(current.object.version_id if current.object else None, current.created_at, request):
            return False
    return vectors.delete([request.upload_id]) > 0


def _keeps(indexed_version: str | None, created_at: datetime, request: DeleteRequest) -> bool:
    """Whether the indexed record (its object version, its submission time) survives `request`."""
    if submitted_after_removal(request, created_at):
        log.info("kept the record: it embeds a submission of %s, after the removal", created_at.isoformat())
        return True
    removed = request.object_version_id
    if removed is not None and indexed_version is not None and indexed_version != removed:
        log.info("kept the record: it embeds version %s, version %s was removed", indexed_version, removed)
        return True
    return False
