"""Deletions are never lost: a delete message popped by a worker that cannot record it as
held (Redis refusing writes, kill -9) is sent again, and a delete whose outcome cannot be
recorded stays unacknowledged. Afterwards no record of a deleted object remains and nothing
is left pending."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from producers.bridge.enqueue import Ingestor
from shared.events import DeleteRequest, UploadStatus
from shared.file_locks import exclusive_lock
from shared.redis_keys import RedisKeys
from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import queue_lengths, unacked_by_queue
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

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
        wait_until(settled, timeout_s=120, what="every deletion to be done", poll_s=0.5)
    finally:
        print(
            f"{DELETIONS} deletions: {remaining()} records of deleted objects remain; "
            f"pending {redis.hlen(KEYS.deletions)}, queued {queue_lengths(redis)}, "
            f"held {dict(unacked_by_queue(redis))}, "
            f"dead letters {redis.xlen(KEYS.dead)}; the sweeper sent {resent_by_sweeper(running)} deletion(s) again"
        )
    assert redis.xlen(KEYS.dead) == 0


def test_a_dead_lettered_deletion_is_done_by_dead_retry(start_stack) -> None:
    """The vector store stays unwritable past a delete's retry budget (another process holds
    LanceDB's write lock: `VectorStoreUnavailable`), so the delete is dead-lettered; once the
    store is writable `omnibind dead --retry` (a real CLI process) sends it again and the
    index worker deletes the record. Before, the retry reported the letter `unreadable` (it
    holds a delete request, not an upload event) and the record stayed."""
    running: RunningStack = start_stack(worker={**FAST_RECOVERY, "retry_for_s": 2}, vectors={"lock_timeout_s": 0.5})
    client, redis, settings = running.client, running.client.redis, running.settings
    upload_id = client.submit_text("a caption to delete", upload_id="del-dead")
    assert client.wait([upload_id], timeout_s=180)[upload_id].status is UploadStatus.INDEXED

    with exclusive_lock(settings.vectors_path / f"{settings.vectors.table}.lock", timeout_s=30):
        client.delete(DeleteRequest(upload_id=upload_id, reason="object removed"))
        [letter] = wait_until(client.dead_letters.entries, timeout_s=120, what="the deletion's dead letter", poll_s=0.3)
    assert (letter.stage, letter.reason, letter.upload_id) == ("delete", "vector_store_unavailable", upload_id)
    assert client.vectors.get(upload_id) is not None and client.deletions.count() == 0

    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dead", "--retry"],
        env=running.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert f"{upload_id}  requeued (deletion sent again)" in done.stdout
    wait_until(lambda: client.vectors.get(upload_id) is None, timeout_s=60, what="the record to be deleted", poll_s=0.3)
    wait_until(lambda: client.deletions.count() == 0, timeout_s=30, what="the deletion to be settled", poll_s=0.3)
    assert redis.xlen(KEYS.dead) == 0
