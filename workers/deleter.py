"""Deleting an upload's vector record when its object is gone (task ``omnibind.delete``).

A deletion can overtake the upload it deletes: the object is removed while its run is still
between preprocessing and indexing, and the index write would then put the record back. So
a delete waits (by being retried) while the upload's run is in flight, and deletes only once
the run has ended; a run whose object vanished before preprocessing fails on its own with
``object_not_found`` and leaves nothing to delete.
"""

from __future__ import annotations

import logging

from shared.errors import TransientError
from shared.events import DeleteRequest
from shared.status import StatusStore
from shared.vectors.store import VectorStore

log = logging.getLogger(__name__)


class UploadInFlight(TransientError):
    """The upload to delete is still being processed; delete once its run has ended."""

    reason = "upload_in_flight"


def delete_record(
    vectors: VectorStore, statuses: StatusStore, request: DeleteRequest, *, wait_in_flight: bool = True
) -> bool:
    """Delete the record of `request.upload_id`; True if one was deleted, False if there was
    none or it embeds another object version than `request.object_version_id`.

    Raises `UploadInFlight` while a run of the upload is in flight (unless `wait_in_flight`
    is False: the last attempt deletes whatever is there), `VectorStoreUnavailable` /
    `RedisUnavailable` when a backend is down.
    """
    status = statuses.get(request.upload_id)
    if wait_in_flight and status is not None and not status.terminal:
        raise UploadInFlight(f"upload {request.upload_id} is {status.status.value}; deleting once it has finished")
    if request.object_version_id is not None:
        current = vectors.get(request.upload_id)
        if current is None:
            return False
        indexed = current.object.version_id if current.object else None
        if indexed is not None and indexed != request.object_version_id:
            log.info(
                "kept the record: it embeds version %s, version %s was removed", indexed, request.object_version_id
            )
            return False
    return vectors.delete([request.upload_id]) > 0
