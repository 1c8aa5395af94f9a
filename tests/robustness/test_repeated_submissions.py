"""Repeated submissions of one id while its run is unfinished start nothing: one run, one
preprocess execution, one result event, however many producers submit at once."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.streams import ResultStream
from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import queue_lengths, unacked_by_queue
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SUBMISSIONS = 50


def preprocess_executions(running: RunningStack) -> int:
    """Preprocess tasks the cpu workers received, counted in their logs (Celery logs one
    "Task omnibind.preprocess[...] received" line per delivery)."""
    assert running.stack.log_dir is not None
    return sum(
        1
        for path in running.stack.log_dir.glob("cpu-*.log")
        for line in path.read_text(errors="replace").splitlines()
        if "Task omnibind.preprocess[" in line and "received" in line
    )


def test_fifty_concurrent_submissions_of_one_id_make_one_run_one_preprocess_and_one_result(start_stack) -> None:
    running: RunningStack = start_stack(worker=FAST_RECOVERY)
    client, stack, redis = running.client, running.stack, running.client.redis
    # No cpu worker while the submissions arrive: the run cannot finish in between, so
    # every submission after the first one meets an unfinished run.
    stack.kill(next(w for w in stack.workers if w.kind == "cpu"), signal.SIGTERM)
    barrier = threading.Barrier(SUBMISSIONS)

    def submit(i: int) -> str:
        barrier.wait()
        return client.submit_text("one caption, submitted fifty times", upload_id="twin")

    with ThreadPoolExecutor(SUBMISSIONS) as pool:
        answers = list(pool.map(submit, range(SUBMISSIONS)))
    queued = queue_lengths(redis)["cpu"]

    stack.wait_ready(120, [stack.spawn("cpu")])
    finished = client.wait(["twin"], timeout_s=120)
    wait_until(
        lambda: sum(queue_lengths(redis).values()) == 0 and not unacked_by_queue(redis),
        timeout_s=120,
        what="every message to be consumed",
    )
    record = finished["twin"]
    results = [e for e in ResultStream(redis, "omnibind").read(count=10**6) if e.result.upload_id == "twin"]
    executions = preprocess_executions(running)

    print(f"{SUBMISSIONS} submissions: {queued} cpu messages, {executions} preprocess executions, run {record.run}")
    assert answers == ["twin"] * SUBMISSIONS
    assert queued == 1, f"{queued} preprocess messages for one run"
    assert record.status.value == "indexed" and record.run == 1
    assert executions == 1
    assert len(results) == 1
