"""Per-upload status records in Redis, and the result event each finished upload emits.

A record is a hash ``{prefix}:upload:{id}``. Its status only moves forward,
``queued → preprocessed → embedded → moderated → indexed``, or to ``failed`` from any
non-terminal status; skipping forward is allowed (a stage that does not apply). Once
terminal (indexed | failed) a record changes only through `StatusStore.requeue` or a new
submission of the same id. Every change runs in one Lua script (`TRANSITION_LUA`), so a
redelivered stage, or many workers racing on one id, cannot move a record backwards, and
exactly one result event reaches ``{prefix}:results`` per terminal transition.

Counters ``{prefix}:counts`` (status -> uploads now in that status; the terminal ones are
not decremented when a record expires, so they read "finished, not since re-run"), a
capped index of recent uploads ``{prefix}:recent`` and the index of unfinished uploads
``{prefix}:inflight`` (scored by their last progress) are kept by the same script. While a
run is in flight its record also holds the upload event, so an upload whose message was
lost can be sent again (`workers.sweeper`). Finished records expire after ``ttl_s``
(0 = never). Layout and formats: docs/redis.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import JsonValue

from shared.config import Settings
from shared.errors import OmnibindError
from shared.events import Modality, ObjectRef, Stage, UploadEvent, UploadStatus, utcnow
from shared.redis_client import translate_redis_errors
from shared.redis_clock import server_time
from shared.redis_replies import reply_text
from shared.status_reads import StatusReads
from shared.status_record import EXTRA_PREFIX, RunStart, StatusRecord, parse_record
from shared.streams import dead_letter_fields

__all__ = [
    "RESULT_STREAM_VERSION",
    "RunStart",
    "StatusReads",
    "StatusRecord",
    "StatusStore",
    "parse_record",
]

RESULT_STREAM_VERSION = "1"  # the "v" field of results-stream entries (written by the script)
MAX_ERROR_CHARS = 4000
_STAGE_PRODUCES = {
    Stage.PREPROCESS: UploadStatus.PREPROCESSED,
    Stage.EMBED: UploadStatus.EMBEDDED,
    Stage.MODERATE: UploadStatus.MODERATED,
    Stage.INDEX: UploadStatus.INDEXED,
    Stage.SPEECH: UploadStatus.EMBEDDED,  # the transcript is the other half of the embedding
}

# KEYS: 1 record hash, 2 results stream, 3 counts hash, 4 recent zset, 5 deliveries hash,
#       6 in-flight zset, 7 dead-letter stream
# ARGV: 1 mode (create | advance | requeue), 2 target status, 3 upload id, 4 now (ISO-8601),
#       5 now (epoch ms), 6 terminal ttl s (0 = keep), 7 results maxlen, 8 recent max,
#       9 submitted_at (create only, else ""), 10 for a failure: the status its stage
#       produces (else ""), 11 for a failure: its dead-letter entry as a JSON list of
#       field, value, ... (else ""), 12 dead-letter stream maxlen, 13.. field/value pairs
#       set when the transition applies.
# Returns 1 when the transition applied, 0 when it was refused (and changed nothing); create
# returns {1 | 0, run number, status} (`RunStart`).
# The one script every change goes through (kept as a .lua file so it reads as Lua).
TRANSITION_LUA = (Path(__file__).parent / "status_transition.lua").read_text()


# Progress of an upload still in flight, stamped by Redis' clock (see status_transition.lua).
TOUCH_LUA = """
local clock = redis.call('TIME')
return redis.call('ZADD', KEYS[1], 'XX', 'CH', clock[1] * 1000 + math.floor(clock[2] / 1000), ARGV[1])
"""


def _iso(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _object_json(ref: ObjectRef) -> str:
    return ref.model_dump_json(exclude_none=True)


def _event_fields(event: UploadEvent) -> dict[str, str]:
    fields = {
        "id": event.id,
        "source": event.source,
        "submitted_at": _iso(event.submitted_at),
        "event": event.model_dump_json(),
    }
    if event.modality is not Modality.AUTO:
        fields["modality"] = event.modality.value
    if event.tenant is not None:
        fields["tenant"] = event.tenant
    if event.object is not None:
        fields["object"] = _object_json(event.object)
    return fields


def _extra_fields(extra: Mapping[str, JsonValue] | None) -> dict[str, str]:
    return {f"{EXTRA_PREFIX}{key}": json.dumps(value, separators=(",", ":")) for key, value in (extra or {}).items()}


class StatusStore(StatusReads):
    """Moves upload status records (see the module docstring for the rules) and reads them
    (`StatusReads`).

    Raises `RedisUnavailable` (transient) when Redis cannot be reached and `ConfigError`
    when it refuses our credentials.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "omnibind",
        *,
        ttl_s: float = 30 * 86400.0,
        results_maxlen: int = 100_000,
        recent_max: int = 10_000,
        dead_maxlen: int = 100_000,
    ) -> None:
        super().__init__(client, prefix)
        self.ttl_s = ttl_s
        self.results_maxlen = results_maxlen
        self.dead_maxlen = dead_maxlen
        self.recent_max = recent_max
        self._transition = client.register_script(TRANSITION_LUA)
        self._touch = client.register_script(TOUCH_LUA)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> StatusStore:
        return cls(
            client,
            settings.queue_prefix,
            ttl_s=settings.redis.status_ttl_s,
            results_maxlen=settings.redis.results_maxlen,
            dead_maxlen=settings.redis.dead_maxlen,
            recent_max=settings.redis.recent_max,
        )

    # -- transitions ----------------------------------------------------------------------

    def create(self, event: UploadEvent) -> bool:
        """Record `event` as queued. True when a new run starts: the id is new, or its
        previous run finished and this is a different submission (another
        ``submitted_at``). False when a run of this id is in flight or this very
        submission was recorded already; nothing changes then."""
        return self.start_run(event).started

    def start_run(self, event: UploadEvent) -> RunStart:
        """`create`, answering which run the id is in: the new one (``started``), or the one
        in flight (or this very submission, recorded already) with its status. Deciding and
        starting are one atomic step: of concurrent submissions of one id, one starts a
        run."""
        reply = self._script(
            "create", UploadStatus.QUEUED, event.id, _event_fields(event), submitted_at=_iso(event.submitted_at)
        )
        started, run, status = reply
        return RunStart(event.id, bool(started), int(run), UploadStatus(reply_text(status)))

    def advance(
        self,
        upload_id: str,
        status: UploadStatus,
        *,
        modality: Modality | None = None,
        object_ref: ObjectRef | None = None,
        flagged: bool | None = None,
        categories: Iterable[str] | None = None,
        extra: Mapping[str, JsonValue] | None = None,
    ) -> bool:
        """Move the record forward to `status` (preprocessed … indexed) and store the given
        fields with it. True when applied; False when the record is already at or past
        `status` or finished (a redelivery), in which case nothing is written. Reaching
        ``indexed`` emits the result event. Raises `ValueError` for queued/failed (use
        `create`/`requeue` and `fail`)."""
        if status in (UploadStatus.QUEUED, UploadStatus.FAILED):
            raise ValueError(f"advance() cannot move to {status.value!r}; use create/requeue or fail")
        fields = _extra_fields(extra)
        if modality is not None:
            fields["modality"] = Modality(modality).value
        if object_ref is not None:
            fields["object"] = _object_json(object_ref)
        if flagged is not None:
            fields["flagged"] = "1" if flagged else "0"
        if categories is not None:
            fields["categories"] = json.dumps(list(categories))
        return self._run("advance", status, upload_id, fields)

    def fail(
        self,
        upload_id: str,
        stage: Stage | str,
        error: BaseException,
        *,
        extra: Mapping[str, JsonValue] | None = None,
        dead_letter: str | None = None,
        attempts: int = 1,
    ) -> bool:
        """Mark the upload failed at `stage` with `error`'s reason and message and emit the
        result event. An `OmnibindError` contributes its `reason`; any other exception is
        recorded as ``internal_error`` with its class name. With `dead_letter` (the message
        to keep, JSON text) its dead letter — error class, reason, message, `attempts` —
        is written in the same step, so a failed upload always has one. True when applied;
        False when the record had finished already, or had already moved past `stage` (a
        stale redelivery of a stage that succeeded before must not fail the run): then
        nothing is written."""
        if isinstance(error, OmnibindError):
            reason, message = error.reason, error.message
        else:
            reason, message = "internal_error", f"{type(error).__name__}: {error}"
        fields = _extra_fields(extra)
        fields.update({"error_reason": reason, "error": message[:MAX_ERROR_CHARS], "failed_stage": Stage(stage).value})
        letter = (
            dead_letter_fields(dead_letter, stage, type(error).__name__, reason, message, attempts, upload_id=upload_id)
            if dead_letter is not None
            else None
        )
        return self._run(
            "advance", UploadStatus.FAILED, upload_id, fields, failing_stage=Stage(stage), dead_letter=letter
        )

    def requeue(self, upload_id: str, event: UploadEvent | None = None) -> bool:
        """Start a new run of a finished upload (``omnibind dead --retry``, a re-index):
        the record returns to queued, keeping its identity (modality, source, tenant,
        object) and dropping the previous run's fields. Pass the `event` being sent again
        so a lost message of the new run can be sent once more. False when there is no
        finished record (unknown, expired, or in flight): then create the upload again
        instead."""
        fields = {"event": event.model_dump_json()} if event is not None else {}
        return self._run("requeue", UploadStatus.QUEUED, upload_id, fields)

    def pending_event(self, upload_id: str) -> UploadEvent | None:
        """The event of the upload's run in flight, as recorded to send it again if its
        message is lost; None once the run finished (or for records written before events
        were kept)."""
        with translate_redis_errors(f"reading the event of upload {upload_id}"):
            raw: Any = self._redis.hget(self.keys.upload(upload_id), "event")
        return UploadEvent.model_validate_json(raw) if raw else None

    def touch(self, upload_id: str) -> bool:
        """Note progress of an unfinished upload without changing its status (a stage about
        to publish a retry). False when the upload is not in flight."""
        with translate_redis_errors(f"noting progress of upload {upload_id}"):
            return bool(self._touch(keys=[self.keys.inflight], args=[upload_id]))

    def stalled(self, idle_s: float, *, limit: int = 500) -> list[tuple[str, int]]:
        """Up to `limit` unfinished uploads without progress for `idle_s` seconds, oldest
        first, each with its last progress (epoch ms)."""
        with translate_redis_errors("listing stalled uploads"):
            cutoff = int(server_time(self._redis) * 1000) - int(idle_s * 1000)  # the clock progress is stamped by
            rows: Any = self._redis.zrangebyscore(
                self.keys.inflight, "-inf", cutoff, start=0, num=limit, withscores=True
            )
        return [(reply_text(member), int(score)) for member, score in rows]

    def _run(
        self,
        mode: Literal["advance", "requeue"],
        status: UploadStatus,
        upload_id: str,
        fields: Mapping[str, str],
        *,
        failing_stage: Stage | None = None,
        dead_letter: Mapping[str, str] | None = None,
    ) -> bool:
        return bool(self._script(mode, status, upload_id, fields, failing_stage=failing_stage, dead_letter=dead_letter))

    def _script(
        self,
        mode: Literal["create", "advance", "requeue"],
        status: UploadStatus,
        upload_id: str,
        fields: Mapping[str, str],
        *,
        submitted_at: str = "",
        failing_stage: Stage | None = None,
        dead_letter: Mapping[str, str] | None = None,
    ) -> Any:
        """Run the transition script; its reply (1/0, or create's list)."""
        if not upload_id:
            raise ValueError("upload_id must not be empty")
        now = utcnow()
        keys = [
            self.keys.upload(upload_id),
            self.keys.results,
            self.keys.counts,
            self.keys.recent,
            self.keys.deliveries(upload_id),
            self.keys.inflight,
            self.keys.dead,
        ]
        args: list[str | int | float] = [
            mode,
            status.value,
            upload_id,
            _iso(now),
            int(now.timestamp() * 1000),
            self.ttl_s,
            self.results_maxlen,
            self.recent_max,
            submitted_at,
            _STAGE_PRODUCES[failing_stage].value if failing_stage is not None else "",
            json.dumps([item for pair in dead_letter.items() for item in pair]) if dead_letter else "",
            self.dead_maxlen,
        ]
        for name, value in fields.items():
            args += [name, value]
        with translate_redis_errors(f"moving upload {upload_id} to {status.value}"):
            return self._transition(keys=keys, args=args)

    def forget(self, upload_id: str) -> bool:
        """Delete a finished upload's record (and its place in the recent index): ``DELETE
        /v1/uploads/{id}``. False when there is none, or its run is in flight (its stages
        would write it again)."""
        record = self.get(upload_id)
        if record is None or not record.terminal:
            return False
        with translate_redis_errors(f"deleting the record of upload {upload_id}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self.keys.upload(upload_id))
            pipe.zrem(self.keys.recent, upload_id)
            pipe.execute()
        return True
