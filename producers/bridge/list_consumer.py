"""Consumer of MinIO's bucket-notification list (format and mapping: `minio_events`).

Reliable-queue pattern: BLMOVE atomically moves the oldest notification from MinIO's list
onto this bridge's own processing list, and it is removed from there (LREM) only after
every record in it was enqueued, dead-lettered or ignored. A bridge that dies in between
finds the notification on its processing list at the next start and handles it again;
`Ingestor` turns that repeat into nothing new. The processing list is named after the
consumer (``<list>:processing:<consumer>``), so keep the consumer name stable.

With an object store (`objects`), a ``DeleteMarkerCreated`` event is checked against the
key's current version (one HEAD): MinIO sends the same event when a delete marker is removed
again, which makes the object visible and must index it, not delete its record.

A tenant over its daily quota (`shared.quotas`) would hold up every tenant's notifications if
its upload were retried in place, so it is dead-lettered instead (reason ``quota_exceeded``,
the mapped UploadEvent kept: ``omnibind dead --retry`` submits it once the operator wants it).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from producers.bridge.enqueue import Ingestor
from producers.bridge.failures import DEAD_LETTER_STAGE, kept_text
from producers.bridge.minio_events import (
    Action,
    Delete,
    Ignore,
    Ingest,
    MinioOptions,
    after_marker_event,
    bucket_and_key,
    map_record,
    parse_notification,
)
from shared.errors import ConfigError, InternalError, ObjectNotFound, PermanentError, TransientError
from shared.events import ObjectRef
from shared.logs import upload_context
from shared.objects.store import ObjectInfo, ObjectStore
from shared.quotas import QuotaExceeded
from shared.redis_client import translate_redis_errors
from shared.streams import DeadLetterStream

log = logging.getLogger(__name__)


def processing_key(events_key: str, consumer: str) -> str:
    return f"{events_key}:processing:{consumer}"


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


class MinioEventsConsumer:
    """Moves notifications from `events_key` through this consumer's processing list."""

    name = "minio-events"

    def __init__(
        self,
        client: redis.Redis,
        events_key: str,
        consumer: str,
        ingestor: Ingestor,
        dead_letters: DeadLetterStream,
        options: MinioOptions,
        *,
        delete_records: bool = True,
        block_s: float = 2.0,
        objects: ObjectStore | None = None,
    ) -> None:
        """`objects`: the store MinIO notifies about, to tell a delete marker's removal from
        its creation; without it every ``DeleteMarkerCreated`` deletes the record."""
        self._redis = client
        self.events_key = events_key
        self.processing_key = processing_key(events_key, consumer)
        self._ingestor = ingestor
        self._dead = dead_letters
        self._options = options
        self._delete_records = delete_records
        self._block_s = block_s
        self._objects = objects
        self._recover = True

    def start(self) -> None:
        self._recover = True

    def poll(self) -> int:
        """Handle what a previous run left on the processing list (first call, and after a
        failure), else the next notification (waiting up to `block_s`). Returns how many
        notifications were handled.

        Raises `TransientError`: the notification stays on the processing list and is
        handled again by the next call.
        """
        if self._recover:
            with translate_redis_errors(f"reading {self.processing_key}"):
                leftovers: Any = self._redis.lrange(self.processing_key, 0, -1)
            if leftovers:
                log.info("handling %d notifications left on %s", len(leftovers), self.processing_key)
            for raw in leftovers:
                self._handle_and_remove(raw)
            self._recover = False
            return len(leftovers)
        with translate_redis_errors(f"moving from {self.events_key}"):
            raw = self._redis.blmove(self.events_key, self.processing_key, self._block_s, "LEFT", "RIGHT")  # type: ignore[arg-type]  # fractional s: Redis >= 6
        if raw is None:
            return 0
        self._handle_and_remove(raw)
        return 1

    def _handle_and_remove(self, raw: bytes | str) -> None:
        try:
            self._handle(raw)
        except BaseException:
            self._recover = True
            raise
        with translate_redis_errors(f"removing a handled notification from {self.processing_key}"):
            self._redis.lrem(self.processing_key, 1, raw)  # type: ignore[arg-type]  # bytes are fine

    def _handle(self, raw: bytes | str) -> None:
        try:
            records = parse_notification(raw)
        except PermanentError as exc:  # invalid, too large, too deep: never parsed again
            self._dead_letter(_text(raw), exc)
            return
        for record in records:
            try:
                self._handle_record(record)
            except (TransientError, ConfigError):
                raise
            except PermanentError as exc:
                self._dead_letter(_record_text(record), exc, self._letter_id(record))
            except Exception as exc:  # a bug must not block the list: keep the record for a retry
                log.exception("notification record failed unexpectedly")
                error = InternalError(f"{type(exc).__name__}: {exc}")
                self._dead_letter(_record_text(record), error, self._letter_id(record))

    def _handle_record(self, record: dict[str, Any]) -> None:
        action = self.action_for(record)
        if isinstance(action, Ingest):
            with upload_context(action.event.id):
                try:
                    outcome = self._ingestor.ingest(action.event)
                except QuotaExceeded as exc:
                    # Waiting would hold up every tenant's notifications on this one list:
                    # kept as a dead letter holding the upload, for `omnibind dead --retry`.
                    self._dead_letter(action.event.model_dump_json(), exc, action.event.id)
                    return
                ref = action.event.object
                log.info("%s/%s: %s", ref.bucket if ref else "?", ref.key if ref else "?", outcome.value)
        elif isinstance(action, Delete):
            if self._delete_records:
                with upload_context(action.request.upload_id):
                    self._ingestor.delete(action.request)
                    log.info("%s/%s removed: record deletion enqueued", action.bucket, action.key)
        elif isinstance(action, Ignore):
            log.debug("notification ignored: %s", action.reason)

    def action_for(self, record: dict[str, Any]) -> Action:
        """What to do about one record (`map_record`, a delete marker event resolved against
        the key's current version). Raises `PermanentError` for an unusable record,
        `StorageUnavailable` when the HEAD fails."""
        action = map_record(record, self._options)
        if isinstance(action, Delete) and action.marker_event and self._objects is not None:
            current = current_version(self._objects, action.bucket, action.key)
            return after_marker_event(action, current, self._options)
        return action

    def _letter_id(self, record: dict[str, Any]) -> str | None:
        """The upload id of the record's object (in its owner's namespace, so the letter is
        that tenant's to see and to purge), when the record names one."""
        try:
            bucket, key = bucket_and_key(record)
        except PermanentError:
            return None
        return self._options.upload_id(bucket, key)

    def _dead_letter(self, text: str, exc: PermanentError | QuotaExceeded, upload_id: str | None = None) -> None:
        log.warning("MinIO notification dead-lettered: %s: %s", exc.reason, exc.message)
        self._dead.dead_letter(
            kept_text(text),
            DEAD_LETTER_STAGE,
            type(exc).__name__,
            exc.reason,
            f"MinIO notification: {exc.message}",
            attempts=1,
            upload_id=upload_id,
        )


def current_version(objects: ObjectStore, bucket: str, key: str) -> ObjectInfo | None:
    """What a plain GET of `key` would show, or None. Raises `StorageUnavailable`."""
    try:
        return objects.head(ObjectRef(bucket=bucket, key=key))
    except ObjectNotFound:  # a delete marker is the current version, or nothing is left
        return None


def _record_text(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)
