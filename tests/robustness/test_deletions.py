"""Deletions are never lost: a delete message popped by a worker that cannot record it as
held (Redis refusing writes, kill -9) is sent again, and a delete whose outcome cannot be
recorded stays unacknowledged. Afterwards no record of a deleted object remains and nothing
is left pending."""

from __future__ import annotations

import signal
import time

import pytest

from producers.bridge.enqueue import Ingestor
from shared.events import DeleteRequest, UploadStatus
from shared.redis_keys import RedisKeys
from tests.robustness.support import FAST_RECOVERY, wait_for
from tests.support.chaos import queue_lengths, unacked_by_queue
from tests.support.stack import RunningStack

pytestmark = pytest.mark.integration

DELETIONS = 40
KEYS = RedisKeys("omnibind")


def resent_by_sweeper(running: RunningStack) -> int:
    """Deletions the stall sweeper sent again (one warning line each in the worker logs)."""
    assert running.stack.log_dir is not None
    return sum(
        path.read_text(errors="replace").count("no message for it exists: sending it again")
        for path in running.stack.log_dir.glob("*.log")
    )


def test_deletions_survive_redis_refusing_writes_and_a_kill_9_ed_index_worker(start_stack) -> None:
    running: RunningStack = start_stack(worker=FAST_RECOVERY)
    client, stack, redis = running.client, running.stack, running.client.redis
    ids = [client.submit_text(f"doomed caption {i}", upload_id=f"del-{i:03d}") for i in range(DELETIONS)]
    finished = client.wait(ids, timeout_s=180)
    assert {r.status for r in finished.values()} == {UploadStatus.INDEXED} and len(finished) == DELETIONS

    ingestor = Ingestor(client)
    for upload_id in ids:
        ingestor.delete(DeleteRequest(upload_id=upload_id))
    # Redis refuses every write that could grow it (as when full under noeviction) while
    # the index worker works through the deletions; then that worker is SIGKILLed.
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", 1)
    time.sleep(2.0)  # the outage (not an assertion)
    stack.kill(next(w for w in stack.workers if w.kind == "index"), signal.SIGKILL)
    redis.config_set("maxmemory", 0)
    stack.spawn("index")

    def settled() -> bool:
        stack.restart_dead()  # a worker may exit on a refused write, as under `omnibind up`
        return remaining() == 0 and pending() == 0

    def remaining() -> int:
        return sum(client.vectors.get(upload_id) is not None for upload_id in ids)

    def pending() -> int:
        return (
            int(redis.hlen(KEYS.deletions))
            + int(redis.zcard(KEYS.deletions_inflight))
            + sum(queue_lengths(redis).values())
            + sum(unacked_by_queue(redis).values())
        )

    try:
        wait_for(settled, timeout_s=120, what="every deletion to be done", poll_s=0.5)
    finally:
        print(
            f"{DELETIONS} deletions: {remaining()} records of deleted objects remain; "
            f"pending {redis.hlen(KEYS.deletions)}, queued {queue_lengths(redis)}, "
            f"held {dict(unacked_by_queue(redis))}, "
            f"dead letters {redis.xlen(KEYS.dead)}; the sweeper sent {resent_by_sweeper(running)} deletion(s) again"
        )
    assert redis.xlen(KEYS.dead) == 0
