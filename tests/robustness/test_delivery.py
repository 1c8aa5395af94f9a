"""Delivery guarantees with real processes: a killed worker's messages come back, a stopped
worker finishes or returns what it holds, a restarted Redis keeps everything, and a message
delivered twice makes one record."""

from __future__ import annotations

import signal
import time

import pytest

from shared.events import UploadEvent
from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import (
    KIND_CYCLE,
    account,
    kill_worker,
    restart_redis,
    submit,
    supervise_until_finished,
    synthetic_upload,
    unacked_tags,
)
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_a_kill_9_ed_gpu_worker_s_messages_come_back_and_duplicates_make_no_second_record(start_stack) -> None:
    running: RunningStack = start_stack(worker=FAST_RECOVERY)
    client, redis = running.client, running.client.redis
    ids = [client.submit_text(f"caption number {i}", upload_id=f"k-{i:03d}") for i in range(300)]
    held = wait_until(lambda: unacked_tags(redis, "gpu"), timeout_s=60, what="the gpu worker to hold messages")

    killed_at = time.monotonic()
    kill_worker(running.stack, "gpu", signal.SIGKILL)
    wait_until(lambda: not held & unacked_tags(redis, "gpu"), timeout_s=60, what="the killed worker's messages")
    recovery_s = time.monotonic() - killed_at
    # The same message twice (as a redelivery racing the original would be).
    twice = UploadEvent(id="twice", text="delivered two times", source="test")
    client.enqueue(twice)
    client.send_to_pipeline(twice)
    finished = client.wait([*ids, "twice"], timeout_s=120)

    print(f"kill -9 gpu worker holding {len(held)} messages: back in the queue after {recovery_s:.1f} s")
    assert len(finished) == len(ids) + 1
    accounting = account(client, [*ids, "twice"])
    assert not accounting.problems(), accounting.summary()
    assert dict(accounting.statuses) == {"indexed": len(ids) + 1}


def test_sigterm_finishes_or_returns_in_flight_work_and_a_redis_restart_loses_nothing(start_stack) -> None:
    running: RunningStack = start_stack(worker=FAST_RECOVERY)
    client, stack = running.client, running.stack
    uploads = [synthetic_upload(i, run="term") for i in range(400)]
    for upload in uploads:
        submit(client, upload)

    redis = client.redis
    for kind in KIND_CYCLE:
        wait_until(
            lambda kind=kind: unacked_tags(redis, kind), timeout_s=60, what=f"the {kind} worker to hold messages"
        )
        replacement = kill_worker(stack, kind, signal.SIGTERM)  # returns once the worker has exited
        assert not unacked_tags(redis, kind), f"the stopped {kind} worker left messages unacknowledged"
        stack.wait_ready(120, [replacement])
    wait_until(lambda: client.statuses.counts()["indexed"] > 0, timeout_s=60, what="uploads to flow again")
    down_s = restart_redis(stack)
    finished, restarted = supervise_until_finished(stack, client, [u.upload_id for u in uploads], timeout_s=180)

    print(
        f"warm shutdown of each worker kind, then a redis restart ({down_s:.1f} s down): {len(finished)} finished; "
        f"{restarted} worker(s) exited on the broker connection loss and were restarted"
    )
    accounting = account(client, [u.upload_id for u in uploads])
    assert not accounting.problems(), accounting.summary()
    assert dict(accounting.statuses) == {"indexed": len(uploads)}
