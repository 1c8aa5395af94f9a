"""How every pipeline task ends: done, retried, or recorded as failed — never silently lost.

Celery acks (and so drops) a late-acked message whose task raised, so no exception may
escape a task except `Reject(requeue=True)`, used when we cannot even record what happened
(Redis down): the message then stays in Redis and is redelivered.

An upload's latency to each status (``omnibind_upload_latency_seconds``) is recorded by the
delivery whose status write moved it there (`advance`), so a redelivered or retried message
counts nothing twice.

Redis keeps no delivery count, so each stage counts its own deliveries per upload; a message
that keeps killing its worker (a decoder segfault, an OOM kill) is dead-lettered after
`max_deliveries` instead of looping forever.

A transient failure is retried for `retry_for_s` seconds from the stage's first failure in
this run, whatever the number of attempts: the retry message carries that moment in its
headers (`FAILING_SINCE_HEADER`), and a redelivered message keeps its headers. A count-based
budget with full jitter gave up after a random stretch of outage (~40 % of uploads were
dead-lettered by a 2-minute outage with the former defaults); a deadline does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from shared.backoff import full_jitter_s
from shared.errors import InternalError, LimitExceeded, OmnibindError, PermanentError, TransientError
from shared.events import Stage, UploadEvent
from shared.logs import stage_context
from shared.queue import is_sparse, upload_headers
from workers.metrics import STAGE_REACHES
from workers.resources import Resources

log = logging.getLogger(__name__)

# Epoch ms of a stage's first transient failure in this run, carried by its retry messages.
FAILING_SINCE_HEADER = "omnibind_failing_since_ms"


class PoisonMessage(PermanentError):
    reason = "poison_message"


# Settles a permanent failure some other way than failing the upload (the speech stage: its
# part of the join, carrying the error); may raise `OmnibindError` when it cannot.
Absorb = Callable[[OmnibindError], None]


def run_stage(
    task: Task,
    resources: Resources,
    stage: Stage,
    event: UploadEvent,
    work: Callable[[], Any],
    *,
    absorb: Absorb | None = None,
) -> None:
    """Run `work` for `event` at `stage` and settle the outcome (see module docstring).
    Log lines inside carry the stage; its duration and outcome go to the metrics. With
    `absorb`, a permanent failure (poison message and time limit included) is handed to it
    instead of failing the upload."""
    with stage_context(stage.value):
        _run_stage(task, resources, stage, event, work, absorb)


def _run_stage(
    task: Task, resources: Resources, stage: Stage, event: UploadEvent, work: Callable[[], Any], absorb: Absorb | None
) -> None:
    settings = resources.settings.worker
    try:
        starts = resources.deliveries.count_delivery(event.id, stage)
    except OmnibindError as exc:
        raise Reject(f"cannot count deliveries: {exc}", requeue=True) from exc
    crashes = starts - 1 - task.request.retries
    if crashes >= settings.max_deliveries:
        give_up(
            resources,
            stage,
            event,
            PoisonMessage(f"{stage} was delivered {starts} times without finishing (worker crashed each time)"),
            starts,
            absorb,
        )
        return
    started_s = time.monotonic()
    succeeded = False
    try:
        work()
        succeeded = True
    except Retry:
        raise
    except PermanentError as exc:
        give_up(resources, stage, event, exc, starts, absorb)
    except TransientError as exc:
        retry_or_give_up(task, resources, stage, event, exc, starts, absorb)
    except SoftTimeLimitExceeded:
        limit = LimitExceeded(f"{stage} exceeded its time limit", reason="time_limit")
        give_up(resources, stage, event, limit, starts, absorb)
    except Exception as exc:
        log.exception("%s failed unexpectedly", stage)
        give_up(resources, stage, event, InternalError(f"{type(exc).__name__}: {exc}"), starts, absorb)
    finally:
        # Retries leave through task.retry's exception, so the outcome is recorded here.
        duration_s = time.monotonic() - started_s
        resources.metrics.stage_finished(stage, ok=succeeded, duration_s=duration_s)
    if succeeded:
        log.debug("%s done in %.1f ms", stage, duration_s * 1000)


def advance(resources: Resources, stage: Stage, event: UploadEvent, **fields: Any) -> bool:
    """Move `event`'s upload to the status `stage` reaches, storing `fields` with it (see
    `StatusStore.advance`), and record its latency when this call moved it: once per run,
    whatever the number of deliveries. True when it moved."""
    moved = resources.status.advance(event.id, STAGE_REACHES[stage], **fields)
    if moved:
        resources.metrics.reached(stage, event.submitted_at)
    return moved


def retry_budget(task: Task, retry_for_s: float) -> tuple[int, float]:
    """(epoch ms of this task's first failure, seconds of retrying left): the first failure is
    the retry message's `FAILING_SINCE_HEADER`, or now when there is none."""
    now_ms = int(time.time() * 1000)
    since = (task.request.headers or {}).get(FAILING_SINCE_HEADER)
    since_ms = int(since) if isinstance(since, int | float) and 0 < since <= now_ms else now_ms
    return since_ms, retry_for_s - (now_ms - since_ms) / 1000


def retry_or_give_up(
    task: Task,
    resources: Resources,
    stage: Stage,
    event: UploadEvent,
    exc: TransientError,
    attempts: int,
    absorb: Absorb | None = None,
) -> None:
    settings = resources.settings.worker
    since_ms, left_s = retry_budget(task, settings.retry_for_s)
    if left_s <= 0 or task.request.retries >= settings.max_retries:
        give_up(resources, stage, event, exc, attempts, absorb)
        return None
    # The last retry runs at the deadline rather than past it.
    wait_s = full_jitter_s(task.request.retries + 1, settings.retry_backoff_s, settings.retry_backoff_max_s)
    countdown = min(left_s, wait_s)
    resources.metrics.retried(stage, exc.reason)
    log.warning(
        "%s: %s (%s); retry %d in %.1f s (%.0f s left of %g s)",
        stage,
        exc.reason,
        exc,
        task.request.retries + 1,
        countdown,
        left_s,
        settings.retry_for_s,
    )
    try:
        # Progress noted first: the retry message must never look older than the upload's
        # last progress to the sweeper (workers.sweeper).
        resources.status.touch(event.id)
        raise task.retry(
            exc=exc,
            countdown=countdown,
            max_retries=settings.max_retries,
            argsrepr=f"<upload {event.id}>",
            headers={
                **upload_headers(event.id, sparse=is_sparse(task.request.headers)),
                FAILING_SINCE_HEADER: since_ms,
            },
        )
    except Retry:
        raise
    except Exception as publish_error:  # the broker itself is unreachable
        raise Reject(f"cannot schedule retry: {publish_error}", requeue=True) from publish_error


def give_up(
    resources: Resources,
    stage: Stage,
    event: UploadEvent,
    exc: OmnibindError,
    attempts: int,
    absorb: Absorb | None = None,
) -> None:
    """Record the failure (status -> failed, result event, dead letter: one atomic step)
    exactly once; a stale redelivery of a stage the run went past records nothing. With
    `absorb`, the failure is handed to it instead (see `run_stage`)."""
    log.warning("%s failed permanently: %s: %s", stage, exc.reason, exc.message)
    try:
        if absorb is not None:
            absorb(exc)
            return
        if resources.status.fail(event.id, stage, exc, dead_letter=event.model_dump_json(), attempts=attempts):
            resources.metrics.failed(stage, exc.reason)
    except OmnibindError as record_error:
        raise Reject(f"cannot record failure: {record_error}", requeue=True) from record_error
