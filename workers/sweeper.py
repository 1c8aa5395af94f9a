"""Finding uploads whose message was lost, and sending them again.

Redis, as Celery's broker, hands a message to a worker with BRPOP and only *then* records
it as unacknowledged (kombu's ``unacked`` hash): a worker killed between the two (kill -9,
an OOM kill, a lost node) takes the message with it, and no visibility timeout brings it
back. The chaos test saw this once or twice per dozen kills. A producer that dies between
recording an upload and sending it, and a Redis crash that loses its last second of writes,
leave the same trace: an upload whose status stops moving while no message for it exists.

Every `interval_s` one worker (elected by a Redis lock) lists the uploads without progress
for `stall_timeout_s` (`StatusStore.stalled`) and, from one atomic snapshot of the queues
and of the unacknowledged messages, decides for each whether its message could still
exist:

- *held*: an unacknowledged message names the upload (`shared.queue.UPLOAD_HEADER`): a
  worker runs it, or waits out a retry's countdown;
- *maybe waiting*: some queue's oldest message was sent before the upload's last progress
  (+ `CLOCK_SKEW_S`, or its send time is unknown): queues are FIFO, so the upload's message
  may be behind it. The margin also covers the stages' own order: a stage records its
  progress and then sends the next message (so that the next stage cannot write its
  status first), which leaves that message's send time milliseconds after the progress.

If neither, the upload goes to the first stage again with the event its status record keeps
while the run is in flight. Stages are idempotent, so a message wrongly thought lost costs a
repeated run, never a second record. The resent run starts a new join (a new token: every
part of `workers.join_store` is made again, so one that was never delivered — an audio
upload at ``embedded`` whose transcript never joined — is produced this time), and its
stages count their deliveries afresh: a resend is not a crash of the stage it reaches
(counted as one, every resend of an upload already past ``preprocessed`` made the first
stage a "poison message" whose failure the status refused as stale, so it stayed where it
was, resent every `stall_timeout_s` for ever). The sweeper counts its own resends
(``resent`` in the upload's deliveries hash) and after `max_resends` fails the upload at
the stage it stalled before (``stalled``, with its dead letter) instead of sending it again.

Uploads waiting for their tenant's turn in the fair queues (`shared.fair_queue`) have no
message on purpose: they are left alone, however long they wait (`fair`).

Deletions are swept the same way: a pending deletion (`shared.deletions`, recorded before
its message is sent and forgotten once it is done or dead-lettered) without progress for
`stall_timeout_s`, whose message no worker holds (`DELETION_HEADER`) and no queue may still
hold, is sent again. Deleting twice is a no-op.

Index workers' sweepers also re-drive dead letters whose reason was a dependency that was
down, once it answers again (`workers.redrive`), elected by a lock of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from shared.deletions import DELETION_HEADER, PendingDeletions
from shared.errors import OmnibindError, PermanentError
from shared.events import DeleteRequest, Stage, UploadEvent, UploadStatus
from shared.fair_queue import FairQueue
from shared.queue import SENT_MS_HEADER, UPLOAD_HEADER, QueueName
from shared.status import StatusStore
from shared.streams import DeliveryCounter
from workers.redrive import Redriver

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 5.0  # how far apart the clocks of producers and workers may be
MAX_PER_SWEEP = 500
_ARGSREPR = re.compile(r"^<upload (.+)>$")
# The stage that moves an upload on from each unfinished status.
NEXT_STAGE = {
    UploadStatus.QUEUED: Stage.PREPROCESS,
    UploadStatus.PREPROCESSED: Stage.EMBED,
    UploadStatus.EMBEDDED: Stage.MODERATE,
    UploadStatus.MODERATED: Stage.INDEX,
}


class LostMessage(PermanentError):
    """An upload's message was lost and its record holds no event to send again (a record
    written before events were kept)."""

    reason = "message_lost"


class Stalled(PermanentError):
    """An upload made no progress though the sweeper sent it again `max_resends` times."""

    reason = "stalled"


RESENT_FIELD = "resent"  # the sweeper's resends, in the upload's deliveries hash
STAGE_FIELDS = tuple(stage.value for stage in Stage)  # the stages' own delivery counts there


@dataclass(frozen=True)
class Snapshot:
    """Where messages are, at one instant."""

    held: frozenset[str]  # uploads named by an unacknowledged message
    oldest_sent_ms: tuple[int | None, ...]  # per non-empty queue: its oldest message's send time, None = unknown
    held_deletions: frozenset[str] = frozenset()  # deletion tokens named by an unacknowledged message

    def may_hold(self, upload_id: str, progress_ms: int, skew_ms: int) -> bool:
        """Could a message for `upload_id` (last progress at `progress_ms`) still exist?"""
        return upload_id in self.held or self._may_wait(progress_ms, skew_ms)

    def may_hold_deletion(self, token: str, progress_ms: int, skew_ms: int) -> bool:
        """Could the message of pending deletion `token` still exist?"""
        return token in self.held_deletions or self._may_wait(progress_ms, skew_ms)

    def _may_wait(self, progress_ms: int, skew_ms: int) -> bool:
        return any(sent is None or sent <= progress_ms + skew_ms for sent in self.oldest_sent_ms)


def message_upload(message: dict[str, Any]) -> str | None:
    """The upload a kombu message envelope carries (our header, or the task's argsrepr)."""
    headers = message.get("headers") or {}
    upload_id = headers.get(UPLOAD_HEADER)
    if isinstance(upload_id, str):
        return upload_id
    match = _ARGSREPR.match(str(headers.get("argsrepr") or ""))
    return match.group(1) if match else None


def message_deletion(message: dict[str, Any]) -> str | None:
    """The pending deletion a kombu message envelope carries (`DELETION_HEADER`)."""
    token = (message.get("headers") or {}).get(DELETION_HEADER)
    return token if isinstance(token, str) else None


def message_sent_ms(message: dict[str, Any]) -> int | None:
    sent = (message.get("headers") or {}).get(SENT_MS_HEADER)
    return int(sent) if isinstance(sent, int | float) else None


def take_snapshot(client: redis.Redis, prefix: str, queues: Iterable[str]) -> Snapshot:
    """Read every queue's oldest message and all unacknowledged messages atomically."""
    names = list(queues)
    pipe = client.pipeline(transaction=True)
    for name in names:
        pipe.lindex(f"{prefix}:{name}", -1)  # kombu LPUSHes and BRPOPs: the tail is the oldest
    pipe.hvals(f"{prefix}:unacked")
    *oldest, unacked = pipe.execute()
    messages = [json.loads(raw)[0] for raw in unacked]  # [message, exchange, routing key]
    held = {message_upload(message) for message in messages}
    deletions = {message_deletion(message) for message in messages}
    oldest_sent = tuple(message_sent_ms(json.loads(raw)) for raw in oldest if raw is not None)
    return Snapshot(
        frozenset(upload_id for upload_id in held if upload_id),
        oldest_sent,
        frozenset(token for token in deletions if token),
    )


class StallSweeper:
    """Sends lost uploads and deletions again (module docstring). `send` publishes an event
    to the first stage, `send_delete` a pending deletion (request, token) to the index queue
    (None: deletions are not swept); `sweep` runs one pass, the thread runs it every
    `interval_s`."""

    def __init__(
        self,
        client: redis.Redis,
        status: StatusStore,
        send: Callable[[UploadEvent], None],
        *,
        prefix: str,
        stall_timeout_s: float,
        interval_s: float,
        clock_skew_s: float = CLOCK_SKEW_S,
        send_delete: Callable[[DeleteRequest, str], None] | None = None,
        redriver: Redriver | None = None,
        max_resends: int = 5,
        fair: FairQueue | None = None,
    ) -> None:
        self._redis = client
        self._fair = fair
        self._status = status
        self._send = send
        self._send_delete = send_delete
        self._redriver = redriver
        self._deletions = PendingDeletions(client, prefix)
        self._prefix = prefix
        self.stall_timeout_s = stall_timeout_s
        self.interval_s = interval_s
        self.max_resends = max_resends
        self._deliveries = DeliveryCounter(client, prefix)
        self._skew_ms = int(clock_skew_s * 1000)
        self._lock_key = f"{prefix}:sweeper"
        self._me = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-sweeper", daemon=True)

    def start(self) -> StallSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except (OmnibindError, redis.RedisError) as exc:  # Redis away: try again next time
                log.warning("stall sweep skipped: %s", exc)
            except Exception:  # a bug must not end the sweeping for good
                log.exception("stall sweep failed")

    def sweep(self) -> list[str]:
        """One pass, if this process wins the lock; returns the uploads and the deletion
        tokens sent again."""
        lock_ms = max(1, int(self.interval_s * 900))  # expires before the next pass of anyone
        self._redrive(lock_ms)
        if not self._redis.set(self._lock_key, self._me, nx=True, px=lock_ms):
            return []
        stalled = self._status.stalled(self.stall_timeout_s, limit=MAX_PER_SWEEP)
        if self._fair is not None and stalled:
            waiting = self._fair.holds(upload_id for upload_id, _ in stalled)
            stalled = [(upload_id, progress_ms) for upload_id, progress_ms in stalled if upload_id not in waiting]
        deletions = self._deletions.stalled(self.stall_timeout_s, limit=MAX_PER_SWEEP) if self._send_delete else []
        if not stalled and not deletions:
            return []
        snapshot = take_snapshot(self._redis, self._prefix, [queue.value for queue in QueueName])
        resent = []
        for upload_id, progress_ms in stalled:
            if not snapshot.may_hold(upload_id, progress_ms, self._skew_ms) and self._send_again(upload_id):
                resent.append(upload_id)
        for token, progress_ms in deletions:
            if not snapshot.may_hold_deletion(token, progress_ms, self._skew_ms) and self._send_deletion_again(token):
                resent.append(token)
        return resent

    def _redrive(self, lock_ms: int) -> None:
        if self._redriver is None:
            return
        try:
            self._redriver.redrive(lock_ms=lock_ms, me=self._me)
        except OmnibindError as exc:  # Redis away, or a send refused: the next pass goes on
            log.warning("dead-letter re-drive skipped: %s", exc)

    def _send_deletion_again(self, token: str) -> bool:
        assert self._send_delete is not None
        request = self._deletions.get(token)
        if request is None:
            return False  # done since the listing
        log.warning("deletion %s made no progress and no message for it exists: sending it again", token)
        with contextlib.suppress(OmnibindError):
            self._deletions.touch(token)
        self._send_delete(request, token)
        return True

    def _send_again(self, upload_id: str) -> bool:
        record = self._status.get(upload_id)
        if record is None or record.terminal:
            return False  # finished (or removed) since the listing
        event = self._status.pending_event(upload_id)
        if event is None:
            stage = NEXT_STAGE.get(record.status, Stage.PREPROCESS)
            self._status.fail(upload_id, stage, LostMessage(f"the message of upload {upload_id} was lost at {stage}"))
            return False
        resends = self._deliveries.count_delivery(upload_id, RESENT_FIELD)
        if resends > self.max_resends:
            stage = NEXT_STAGE.get(record.status, Stage.PREPROCESS)
            stalled = Stalled(
                f"no progress past {record.status.value} though sent again {resends - 1} times (no message was left)"
            )
            log.warning("upload %s: %s; failing it", upload_id, stalled.message)
            self._status.fail(upload_id, stage, stalled, dead_letter=event.model_dump_json(), attempts=resends)
            return False
        log.warning(
            "upload %s made no progress since it was %s and no message for it exists: sending it again (%d of %d)",
            upload_id,
            record.status.value,
            resends,
            self.max_resends,
        )
        # A new run, not a redelivery: its stages start counting again (module docstring).
        self._deliveries.forget(upload_id, STAGE_FIELDS)
        # Progress first: this upload is not looked at again before stall_timeout_s.
        with contextlib.suppress(OmnibindError):
            self._status.touch(upload_id)
        self._send(event)
        return True
