"""Breaking a running stack on purpose, and accounting for every upload afterwards.

Used by tests/robustness (CI-sized runs) and bench/chaos.py (long runs). Everything that
starts processes (`Stack.spawn`, `restart_redis`) must run on the main thread: children get
SIGTERM when the *thread* that started them ends (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import signal
import threading
import time
import wave
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import redis
from PIL import Image

from producers.client import Client
from producers.embedded_redis import EmbeddedRedis
from producers.stack import Stack, WorkerKind, WorkerProcess
from shared.backoff import poll
from shared.errors import TransientError
from shared.events import DeleteRequest, UploadStatus
from shared.status import StatusRecord
from shared.streams import ResultStream

log = logging.getLogger(__name__)

KIND_CYCLE: tuple[WorkerKind, ...] = ("cpu", "gpu", "index")


# -- looking inside ---------------------------------------------------------------------------


def unacked_by_queue(client: redis.Redis, prefix: str = "omnibind") -> Counter[str]:
    """Messages reserved by some worker and not acknowledged yet, per queue (kombu keeps
    them in the ``unacked`` hash until acked, or restored after the visibility timeout)."""
    counts: Counter[str] = Counter()
    for raw in client.hvals(f"{prefix}:unacked"):
        _message, _exchange, routing_key = json.loads(raw)
        counts[routing_key] += 1
    return counts


def unacked_tags(client: redis.Redis, queue: str, prefix: str = "omnibind") -> set[str]:
    """Delivery tags of the unacknowledged messages of one queue."""
    return {
        tag if isinstance(tag, str) else tag.decode()
        for tag, raw in client.hgetall(f"{prefix}:unacked").items()
        if json.loads(raw)[2] == queue  # [message, exchange, routing key]
    }


def queue_lengths(client: redis.Redis, prefix: str = "omnibind") -> dict[str, int]:
    return {kind: int(client.llen(f"{prefix}:{kind}")) for kind in KIND_CYCLE}


def worker_tree(worker: WorkerProcess) -> list[psutil.Process]:
    """A worker's main process and its pool processes."""
    main = psutil.Process(worker.process.pid)
    return [main, *main.children(recursive=True)]


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory process `pid` ever had (Linux ``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


# -- breaking things ----------------------------------------------------------------------------


def kill_worker(stack: Stack, kind: WorkerKind, sig: int = signal.SIGKILL) -> WorkerProcess:
    """Signal the (first) worker of `kind` — its whole process group — and start a
    replacement, which is returned (not waited for)."""
    victim = next(w for w in stack.workers if w.kind == kind)
    stack.kill(victim, sig)
    return stack.spawn(kind)


def restart_redis(stack: Stack, *, crash: bool = False, down_s: float = 0.5) -> float:
    """Stop the stack's embedded redis-server — SIGTERM (it writes its AOF and exits) or,
    with `crash`, SIGKILL — wait `down_s`, and start it again on the same port and data
    dir. Returns how long it was unavailable, in seconds."""
    old = stack.redis
    assert old is not None, "the stack runs no embedded redis"
    started = time.monotonic()
    if crash:
        old.kill()
    else:
        old.stop()
    time.sleep(down_s)  # the outage lasts this long
    stack.redis = EmbeddedRedis(old.data_dir, port=old.port, password=old.password, server_bin=old.server_bin).start()
    return time.monotonic() - started


def supervise_until_finished(
    stack: Stack, client: Client, upload_ids: Iterable[str], *, timeout_s: float, poll_s: float = 2.0
) -> tuple[dict[str, StatusRecord], int]:
    """Wait for `upload_ids` to finish while restarting workers that exit on their own, as
    `omnibind up` (and a container restart policy) does. Returns the finished records and
    how many workers had to be restarted."""
    pending = list(upload_ids)
    finished: dict[str, StatusRecord] = {}
    restarted = 0

    def all_finished() -> bool | None:
        nonlocal pending, restarted
        if not pending:
            return True
        for worker in stack.restart_dead():
            restarted += 1
            log.warning("%s worker exited on its own and was restarted (pid %d)", worker.kind, worker.process.pid)
        finished.update(client.wait(pending, timeout_s=poll_s))  # wakes on results: no sleep between
        pending = [upload_id for upload_id in pending if upload_id not in finished]
        return None if pending else True

    # Not a wait_until: what has not finished by the deadline is the caller's to account for.
    poll(all_finished, timeout_s=timeout_s, interval_s=0)
    return finished, restarted


# -- synthetic uploads ------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """One synthetic upload: inline text, or bytes stored under `filename`."""

    upload_id: str
    text: str | None = None
    data: bytes | None = None
    filename: str | None = None


def synthetic_upload(index: int, *, run: str = "u") -> Upload:
    """Cheap, varied uploads: 3 in 5 inline texts, then a small PNG, then a 0.5 s WAV."""
    upload_id = f"{run}-{index:05d}"
    kind = index % 5
    if kind == 3:
        rng = np.random.default_rng(index)
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, format="PNG")
        return Upload(upload_id, data=out.getvalue(), filename=f"{upload_id}.png")
    if kind == 4:
        t = np.arange(8000) / 16000
        pcm = (np.sin(2 * math.pi * (200 + index) * t) * 9000).astype("<i2")
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm.tobytes())
        return Upload(upload_id, data=out.getvalue(), filename=f"{upload_id}.wav")
    return Upload(upload_id, text=f"upload {index}: a short caption about item number {index}")


def submit(client: Client, upload: Upload) -> None:
    """Submit one upload under its fixed id (so a retried submission never makes a second
    upload)."""
    if upload.text is not None:
        client.submit_text(upload.text, upload_id=upload.upload_id)
    else:
        assert upload.data is not None
        client.submit(upload.data, upload_id=upload.upload_id, filename=upload.filename)


class Submitter(threading.Thread):
    """Submits `uploads` at `rate_per_s` from a background thread, retrying a submission
    while Redis is unavailable (it may be restarting)."""

    def __init__(
        self,
        client: Client,
        uploads: Iterable[Upload],
        *,
        rate_per_s: float,
        retry_for_s: float = 60,
        delete_every: int = 0,
    ) -> None:
        super().__init__(name="submitter", daemon=True)
        self.client = client
        self.uploads = list(uploads)
        self.interval_s = 1.0 / rate_per_s
        self.retry_for_s = retry_for_s
        # Delete about one upload in `delete_every` right after submitting it (0: none), chosen
        # by a hash of its id: every n-th would pick one kind only (`synthetic_upload` cycles by 5).
        self.delete_every = delete_every
        self.submitted: list[str] = []
        self.deleted: list[str] = []
        self.retried_submissions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            next_at = time.monotonic()
            for upload in self.uploads:
                time.sleep(max(0.0, next_at - time.monotonic()))  # paced at `rate_per_s`
                next_at += self.interval_s
                self._with_retries(lambda: submit(self.client, upload))  # noqa: B023 - called at once
                self.submitted.append(upload.upload_id)
                if self.delete_every and zlib.crc32(upload.upload_id.encode()) % self.delete_every == 0:
                    # Deleted while its run is in flight: the delete waits for the run to end.
                    request = DeleteRequest(upload_id=upload.upload_id, reason="chaos")
                    self._with_retries(lambda: self.client.delete(request))  # noqa: B023 - called at once
                    self.deleted.append(upload.upload_id)
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _with_retries(self, send: Callable[[], object]) -> None:
        """`send`, tried again every 0.2 s while Redis is away, as a platform would; the last
        TransientError after `retry_for_s`."""
        failures: list[TransientError] = []

        def sent() -> bool | None:
            try:
                send()
                return True
            except TransientError as exc:
                failures[:] = [exc]
                self.retried_submissions += 1
                return None

        if poll(sent, timeout_s=self.retry_for_s, interval_s=0.2) is None:
            raise failures[0]


# -- accounting ----------------------------------------------------------------------------------


@dataclass
class Accounting:
    """What became of a set of uploads, from the three places that record it."""

    uploads: int
    statuses: Counter[str]  # status (or "missing") -> uploads
    failure_reasons: Counter[str]
    result_events: Counter[int]  # result events per upload -> uploads with that many
    records_per_indexed: Counter[int]  # vector records per indexed upload -> uploads
    stray_records: int  # records whose upload is not indexed (or not ours)
    deleted: int = 0  # uploads deleted on purpose: they must have no vector record
    deleted_with_records: int = 0
    pending_deletions: int = 0  # deletions not settled (done or dead-lettered)
    dead_deletions: int = 0  # deletions that ended as dead letters

    @property
    def unfinished(self) -> int:
        return sum(n for status, n in self.statuses.items() if status not in ("indexed", "failed"))

    def summary(self) -> str:
        return (
            f"{self.uploads} uploads: {dict(self.statuses)}; failure reasons {dict(self.failure_reasons)}; "
            f"result events per upload {dict(self.result_events)}; "
            f"vector records per indexed upload {dict(self.records_per_indexed)}; stray records {self.stray_records}"
            + (
                f"; {self.deleted} deleted: {self.deleted_with_records} still with a record, "
                f"{self.pending_deletions} pending, {self.dead_deletions} dead-lettered"
                if self.deleted
                else ""
            )
        )

    def problems(self) -> list[str]:
        """Every broken guarantee: unfinished uploads, not exactly one result event each,
        not exactly one vector record per indexed upload, records of anything else."""
        problems = []
        if self.unfinished:
            problems.append(f"{self.unfinished} uploads are not in a terminal state")
        if set(self.result_events) != {1}:
            problems.append(f"result events per upload: {dict(self.result_events)} (want exactly 1 each)")
        if self.records_per_indexed and set(self.records_per_indexed) != {1}:
            problems.append(f"records per indexed upload: {dict(self.records_per_indexed)} (want exactly 1 each)")
        if self.stray_records:
            problems.append(f"{self.stray_records} vector records belong to no indexed upload")
        if self.deleted_with_records:
            problems.append(f"{self.deleted_with_records} deleted uploads still have a vector record")
        if self.pending_deletions or self.dead_deletions:
            problems.append(f"deletions: {self.pending_deletions} pending, {self.dead_deletions} dead-lettered")
        return problems


def account(client: Client, upload_ids: Iterable[str], deleted: Iterable[str] = ()) -> Accounting:
    """What became of `upload_ids`; those in `deleted` were deleted on purpose (they must
    end with no vector record and no deletion left pending or dead-lettered)."""
    gone = set(deleted)
    ids = [upload_id for upload_id in upload_ids if upload_id not in gone]
    records = {upload_id: client.status(upload_id) for upload_id in ids}
    statuses = Counter(record.status.value if record else "missing" for record in records.values())
    reasons = Counter(
        record.error_reason or "?" for record in records.values() if record and record.status is UploadStatus.FAILED
    )
    events: Counter[str] = Counter(
        entry.result.upload_id for entry in ResultStream(client.redis, client.settings.queue_prefix).read(count=10**7)
    )
    per_vector: Counter[str] = Counter(record.upload_id for record in client.vectors.iter_records())
    indexed = {upload_id for upload_id, record in records.items() if record and record.status is UploadStatus.INDEXED}
    return Accounting(
        uploads=len(ids),
        statuses=statuses,
        failure_reasons=reasons,
        result_events=Counter(events[upload_id] for upload_id in ids),
        records_per_indexed=Counter(per_vector[upload_id] for upload_id in indexed),
        stray_records=sum(
            n for upload_id, n in per_vector.items() if upload_id not in indexed and upload_id not in gone
        ),
        deleted=len(gone),
        deleted_with_records=sum(1 for upload_id in gone if per_vector[upload_id]),
        pending_deletions=client.deletions.count() if gone else 0,
        dead_deletions=sum(1 for letter in client.dead_letters.entries(10**6) if letter.stage == "delete"),
    )


# -- a chaos run ---------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    uploads: int
    kills: Counter[str] = field(default_factory=Counter)
    redis_restarts: int = 0
    redis_down_s: float = 0.0
    retried_submissions: int = 0
    restarted_workers: int = 0  # workers that exited on their own (restarted as `omnibind up` does)
    refusals: Counter[str] = field(default_factory=Counter)  # episodes of Redis refusing writes, by kind
    refused_s: float = 0.0
    deleted: int = 0
    ingest_s: float = 0.0  # first submission -> last upload terminal
    accounting: Accounting | None = None

    def as_dict(self) -> dict[str, object]:
        accounting = self.accounting
        return {
            "uploads": self.uploads,
            "kills": dict(self.kills),
            "redis_restarts": self.redis_restarts,
            "redis_down_s": round(self.redis_down_s, 2),
            "retried_submissions": self.retried_submissions,
            "workers_restarted_after_exiting": self.restarted_workers,
            "redis_refusals": dict(self.refusals),
            "redis_refused_s": round(self.refused_s, 1),
            "deleted": self.deleted,
            "deleted_with_records": accounting.deleted_with_records if accounting else None,
            "pending_deletions": accounting.pending_deletions if accounting else None,
            "dead_deletions": accounting.dead_deletions if accounting else None,
            "ingest_s": round(self.ingest_s, 1),
            "statuses": dict(accounting.statuses) if accounting else None,
            "failure_reasons": dict(accounting.failure_reasons) if accounting else None,
            "result_events_per_upload": dict(accounting.result_events) if accounting else None,
            "records_per_indexed_upload": dict(accounting.records_per_indexed) if accounting else None,
            "stray_records": accounting.stray_records if accounting else None,
        }


REFUSALS = ("noreplicas", "oom")


def refuse_writes(client: redis.Redis, kind: str, seconds: float) -> None:
    """Make Redis refuse writes for `seconds`: every write, BRPOP included (``noreplicas``:
    one replica required, none connected), or every write that could grow it (``oom``:
    ``maxmemory 1`` under noeviction); then accept again."""
    if kind == "noreplicas":
        client.config_set("min-replicas-to-write", 1)
    else:
        client.config_set("maxmemory", 1)
    try:
        time.sleep(seconds)  # the refusal lasts this long
    finally:
        client.config_set("min-replicas-to-write", 0)
        client.config_set("maxmemory", 0)


def run_chaos(
    stack: Stack,
    client: Client,
    uploads: list[Upload],
    *,
    rate_per_s: float,
    kill_every_s: float,
    restart_redis_after_kills: int | None,
    min_kills_per_kind: int,
    finish_timeout_s: float,
    crash_redis: bool = False,
    on_event: Callable[[str], None] = log.info,
    delete_every: int = 0,
    refuse_every_kills: int = 0,
    refuse_s: float = 2.0,
) -> ChaosReport:
    """Submit `uploads` at `rate_per_s` while kill -9-ing a cpu, gpu or index worker in turn
    every `kill_every_s` (each replaced at once) and restarting Redis once after
    `restart_redis_after_kills` kills; stop breaking things once every upload is submitted
    and every kind was killed `min_kills_per_kind` times; then wait up to
    `finish_timeout_s` for every upload to finish, and account for all of them. Call it on
    the main thread.

    With `delete_every` n, every n-th upload is deleted right after it is submitted (while
    its run is in flight); with `refuse_every_kills` k, Redis refuses writes for `refuse_s`
    after every k-th kill (`refuse_writes`, alternating ``noreplicas`` and ``oom``), and the
    deletions must all be settled before the accounting."""
    report = ChaosReport(uploads=len(uploads))
    submitter = Submitter(client, uploads, rate_per_s=rate_per_s, delete_every=delete_every)
    refusals = itertools.cycle(REFUSALS)
    started = time.monotonic()
    submitter.start()
    kinds = itertools.cycle(KIND_CYCLE)
    while submitter.is_alive() or min(report.kills[k] for k in KIND_CYCLE) < min_kills_per_kind:
        time.sleep(kill_every_s)  # the pace of the kills
        kind = next(kinds)
        kill_worker(stack, kind)
        report.kills[kind] += 1
        on_event(f"{time.monotonic() - started:6.1f} s  kill -9 {kind} worker ({len(submitter.submitted)} submitted)")
        if restart_redis_after_kills is not None and sum(report.kills.values()) == restart_redis_after_kills:
            report.redis_down_s += restart_redis(stack, crash=crash_redis)
            report.redis_restarts += 1
            how = "SIGKILL" if crash_redis else "SIGTERM"
            on_event(f"{time.monotonic() - started:6.1f} s  redis-server restarted ({how})")
        if refuse_every_kills and sum(report.kills.values()) % refuse_every_kills == 0:
            refusal = next(refusals)
            on_event(f"{time.monotonic() - started:6.1f} s  Redis refuses writes ({refusal}) for {refuse_s:g} s")
            refuse_writes(client.redis, refusal, refuse_s)
            report.refusals[refusal] += 1
            report.refused_s += refuse_s
    submitter.join()
    if submitter.error is not None:
        raise RuntimeError("submitting failed") from submitter.error
    report.retried_submissions = submitter.retried_submissions
    finished, report.restarted_workers = supervise_until_finished(
        stack, client, submitter.submitted, timeout_s=finish_timeout_s
    )
    report.ingest_s = time.monotonic() - started
    on_event(f"{report.ingest_s:6.1f} s  {len(finished)} of {len(uploads)} uploads finished")
    report.deleted = len(submitter.deleted)
    if submitter.deleted:
        _wait_deletions_settled(stack, client, timeout_s=finish_timeout_s)
        on_event(f"{time.monotonic() - started:6.1f} s  deletions settled ({client.deletions.count()} pending)")
    report.accounting = account(client, [u.upload_id for u in uploads], submitter.deleted)
    return report


def _wait_deletions_settled(stack: Stack, client: Client, *, timeout_s: float) -> None:
    """Until no deletion is pending (a delete waits for its upload's run, then for its own
    retries), restarting workers that exit on their own."""

    def settled() -> bool | None:
        if not client.deletions.count():
            return True
        stack.restart_dead()
        return None

    # Not a wait_until: deletions still pending at the deadline are the accounting's to report.
    poll(settled, timeout_s=timeout_s, interval_s=1.0)
