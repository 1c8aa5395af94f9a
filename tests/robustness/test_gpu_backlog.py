"""A GPU stage that lags does not pile preprocessed arrays up in Redis.

Each preprocessed upload rides the gpu queue inside its message (~0.2 MB for an image), so
with no bound a burst moved the whole cpu queue into the gpu queue as arrays while the GPU
stage fell behind. Here no gpu worker runs at first: the cpu worker preprocesses until the
gpu queue holds OMNIBIND_BACKPRESSURE__MAX_GPU_QUEUE messages, then holds off (the rest wait
as small events, retried with backoff); once gpu and index workers start, every upload ends
indexed, none dead-lettered."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack
from shared.events import UploadStatus
from tests.robustness.support import FAST_RECOVERY
from tests.support.stack import stack_settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

UPLOADS = 12
MAX_GPU_QUEUE = 3
HELD_MARK = "holding off preprocessing"  # workers.handoff.wait_for_gpu_room's Busy


def test_a_lagging_gpu_stage_bounds_the_arrays_waiting_in_redis(tmp_path: Path, model_cache: Path) -> None:
    settings = stack_settings(
        tmp_path, model_cache, worker=FAST_RECOVERY, backpressure={"max_gpu_queue": MAX_GPU_QUEUE}
    )
    (tmp_path / "logs").mkdir()
    with Stack(settings, kinds=("cpu",), log_dir=tmp_path / "logs") as stack:
        [cpu] = stack.workers
        client = Client(settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")}), source="test")
        redis, gpu_queue = client.redis, f"{settings.queue_prefix}:gpu"
        try:
            ids = [client.submit_text(f"caption {i}", upload_id=f"burst-{i}") for i in range(UPLOADS)]

            def statuses() -> list[UploadStatus | None]:
                return [r.status if r else None for r in (client.status(upload_id) for upload_id in ids)]

            def held_or_all_preprocessed() -> bool:
                assert cpu.log_path is not None
                held = HELD_MARK in cpu.log_path.read_text(errors="replace")
                return held or statuses().count(UploadStatus.PREPROCESSED) == UPLOADS

            wait_until(held_or_all_preprocessed, timeout_s=120, what="the cpu worker to fill the gpu queue", poll_s=0.2)
            waiting = int(redis.llen(gpu_queue))
            # Check, then push: each of the cpu worker's processes may add one past the limit.
            assert waiting <= MAX_GPU_QUEUE + settings.worker.cpu_concurrency, f"{waiting} arrays in the gpu queue"
            assert statuses().count(UploadStatus.QUEUED) >= UPLOADS - waiting, "the rest wait as events"

            stack.spawn("gpu")
            stack.spawn("index")
            finished = client.wait(ids, timeout_s=180)
            assert {upload_id: r.status for upload_id, r in finished.items()} == {
                upload_id: UploadStatus.INDEXED for upload_id in ids
            }
            assert client.dead_letters.length() == 0
        finally:
            client.close()
