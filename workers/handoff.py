"""Passing an upload to the next stage, and decoding what a stage received."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from shared.backoff import poll
from shared.backpressure import gpu_queue_full
from shared.errors import Busy, InvalidEvent, OmnibindError
from shared.events import Stage
from shared.queue import ROUTES, TaskName, is_sparse, upload_headers
from shared.redis_client import RedisUnavailable
from workers.resources import Resources

log = logging.getLogger(__name__)

M = TypeVar("M")

GPU_ROOM_POLL_S = 0.2
GPU_ROOM_WAIT_FRACTION = 0.25  # of the task time limit: well inside Celery's soft limit (0.9)


def wait_for_gpu_room(resources: Resources) -> None:
    """Return once the gpu queue has room for one more array (`gpu_queue_full`). A GPU stage
    that keeps up frees room within a batch or two, so this waits up to a quarter of the task
    time limit, then raises `Busy` (transient: the stage retries with backoff, and a GPU
    stalled past ``retry_for_s`` ends as a ``busy`` dead letter, which the sweeper re-drives)."""
    settings = resources.settings
    full: str | None = None

    def room() -> bool | None:
        nonlocal full
        full = gpu_queue_full(resources.redis, settings)
        return True if full is None else None

    timeout_s = settings.worker.task_time_limit_s * GPU_ROOM_WAIT_FRACTION
    if poll(room, timeout_s=timeout_s, interval_s=GPU_ROOM_POLL_S) is None:
        raise Busy(f"holding off preprocessing: {full}")


def send_next(task: Task, name: TaskName, payload: dict[str, Any], upload_id: str) -> None:
    """Enqueue stage `name` for one upload. The message is sent before this stage's own
    message is acked, so a crash in between causes a (harmless, idempotent) repeat, never a
    loss. A sparse tenant's upload stays one (`SPARSE_HEADER`) from stage to stage."""
    publish(task.app, name, payload, upload_id, sparse=is_sparse(task.request.headers))


def publish(app: Celery, name: TaskName, payload: dict[str, Any], upload_id: str, *, sparse: bool = False) -> None:
    """Send one upload's message for stage `name`, with the upload headers. Raises
    `RedisUnavailable` (transient: the stage is retried) when the broker cannot take it —
    down, restarting, or still loading its data after a restart."""
    try:
        app.send_task(
            name,
            args=[payload],
            queue=ROUTES[name]["queue"],
            # Fire and forget: outside a worker, Celery's Redis result backend would
            # otherwise SUBSCRIBE to a result channel for every message sent.
            ignore_result=True,
            # The default repr of a 150 KB array payload costs more than sending it.
            argsrepr=f"<upload {upload_id}>",
            kwargsrepr="{}",
            headers=upload_headers(upload_id, sparse=sparse),
        )
    except OperationalError as exc:
        raise RedisUnavailable(f"cannot send upload {upload_id} to {name}: {exc}") from exc


def decode_message(resources: Resources, stage: Stage, doc: Any, decode: Callable[[dict[str, Any]], M]) -> M | None:
    """Decode a stage message; an undecodable one is dead-lettered (it can never succeed) and
    None is returned."""
    try:
        if not isinstance(doc, dict):
            raise InvalidEvent(f"{stage} message must be a mapping, got {type(doc).__name__}")
        return decode(doc)
    except (InvalidEvent, KeyError, TypeError, ValueError) as exc:
        event = doc.get("event", doc) if isinstance(doc, dict) else {"raw": repr(doc)[:2000]}
        upload_id = event.get("id") if isinstance(event, dict) else None
        log.error("%s: undecodable message for upload %s: %s", stage, upload_id, exc)
        failure = InvalidEvent(f"undecodable {stage} message: {exc}")
        try:
            _record_undecodable(resources, stage, event, upload_id, failure, type(exc).__name__)
        except OmnibindError as record_error:  # Redis down: keep the message for later
            raise Reject(f"cannot record an undecodable message: {record_error}", requeue=True) from record_error
        return None


def _record_undecodable(
    resources: Resources, stage: Stage, event: Any, upload_id: Any, failure: InvalidEvent, error_class: str
) -> None:
    kept = json.dumps(event, default=str)
    if isinstance(upload_id, str):
        resources.status.fail(upload_id, Stage(stage), failure, dead_letter=kept)
        return
    resources.dead_letters.dead_letter(  # no upload to fail: only the dead letter tells
        kept, stage=stage, error_class=error_class, reason=failure.reason, message=failure.message, attempts=1
    )
