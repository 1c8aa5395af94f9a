"""Redis' disk runs full in the middle of a run (its AOF cannot grow: every write, PING and
BRPOP included, is refused with MISCONF) and space comes back later, without anyone touching
Redis or the workers. Producers get `RedisUnavailable`; once the disk has room again every
upload ends indexed and nothing is left queued or held.

No worker exits: a refused BRPOP is asked again after a backoff (shared/broker_transport.py).
The test supervises the workers the way `up` does (`Stack.restart_dead` every second) and
asserts it never had to restart one (before, each worker kind exited once with
"Unrecoverable error: server:ResponseError" and was replaced)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pydantic import SecretStr

from producers.stack import Stack
from shared.events import UploadStatus
from shared.redis_client import RedisUnavailable
from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import submit, synthetic_upload
from tests.support.full_disk import FullDiskRedis
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@contextmanager
def supervised(stack: Stack) -> Iterator[list[int]]:
    """Restart dead workers every second, as `omnibind up` does; yields the list of restarts
    (one entry per restarted worker)."""
    restarts: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(1.0):
            restarts.extend(w.process.pid for w in stack.restart_dead())

    thread = threading.Thread(target=loop, name="supervisor", daemon=True)
    thread.start()
    try:
        yield restarts
    finally:
        stop.set()
        thread.join()


def _worker_logs(running: RunningStack) -> str:
    return "\n".join(w.log_path.read_text(errors="replace") for w in running.stack.workers if w.log_path)


def test_a_full_redis_disk_is_ridden_out_and_every_upload_finishes_once_space_returns(
    start_stack, full_disk_redis: FullDiskRedis
) -> None:
    running: RunningStack = start_stack(worker=FAST_RECOVERY, redis_url=SecretStr(full_disk_redis.url))
    client, prefix = running.client, running.settings.queue_prefix
    warm = [synthetic_upload(i, run="warm") for i in range(5)]
    for upload in warm:
        submit(client, upload)
    assert {r.status for r in client.wait([u.upload_id for u in warm], timeout_s=120).values()} == {
        UploadStatus.INDEXED
    }

    caught = [synthetic_upload(i, run="caught") for i in range(15)]  # texts, PNGs, WAVs
    with supervised(running.stack) as restarts:
        for upload in caught:
            submit(client, upload)
        full_disk_redis.fill_disk()
        wait_until(full_disk_redis.aof_write_failing, timeout_s=60, what="the AOF disk to run full")
        with pytest.raises(RedisUnavailable):
            submit(client, synthetic_upload(0, run="refused"))
        wait_until(lambda: "MISCONF" in _worker_logs(running), timeout_s=60, what="a worker to meet the full disk")
        time.sleep(3)  # let every worker's retries and polls meet the refusals a while longer

        full_disk_redis.free_disk()
        finished = client.wait([u.upload_id for u in caught], timeout_s=180)

    assert {u.upload_id: finished[u.upload_id].status for u in caught if u.upload_id in finished} == {
        u.upload_id: UploadStatus.INDEXED for u in caught
    }, f"workers restarted: {len(restarts)}"
    assert restarts == [], f"workers exited while the disk was full:\n{_worker_logs(running)[-4000:]}"
    assert "Redis refused to hand out messages" in _worker_logs(running)
    redis = client.redis
    wait_until(
        lambda: (
            not any(redis.llen(f"{prefix}:{q}") for q in ("cpu", "gpu", "index", "speech"))
            and not redis.hlen(f"{prefix}:unacked")
        ),
        timeout_s=60,
        what="the queues to drain",
    )
    # Delivery counters go with their uploads (the status script drops them), and an indexed
    # upload's join hash is dropped by the index stage. A message redelivered after its run
    # ended (the full disk refused its ack) counts itself, or makes its part of the join,
    # again, and is then dropped as stale: what it made is left to its TTL. Nothing may stay
    # for ever, and the leftovers are the few redelivered, not every upload.
    bounds = {
        "deliveries": running.settings.redis.delivery_ttl_s,
        "moderation:join": running.settings.moderation.join_ttl_s,
    }
    for kind, ttl_s in bounds.items():
        left = {key: redis.ttl(key) for key in redis.scan_iter(match=f"{prefix}:{kind}:*")}
        assert all(0 < ttl <= ttl_s for ttl in left.values()), left
        assert len(left) <= len(caught) // 5, f"{kind} of finished uploads are dropped, not kept: {left}"
