"""A poison upload — one that kills its worker process on every attempt — ends dead-lettered
after the configured number of deliveries, while other uploads keep flowing.

The crash is real: a valid 64-megapixel RGBA PNG (within every input limit) needs about
1.2 GB to decode, and the CPU worker runs with OMNIBIND_WORKER__MAX_CHILD_MEMORY_MB=600, so
the memory guard SIGKILLs the pool process decoding it, exactly as the kernel's OOM killer
would in a memory-limited container. No test-only hook exists in production code."""

from __future__ import annotations

import psutil
import pytest

from shared.events import Stage, UploadStatus
from tests.robustness.hostile_files import flat_png
from tests.support.chaos import account
from tests.support.stack import RunningStack

pytestmark = pytest.mark.integration

MAX_DELIVERIES = 3
CHILD_MEMORY_MB = 600  # a pool process idles at ~250 MB (torch imported); the poison needs ~1.4 GB


def test_an_upload_that_crashes_its_worker_every_time_is_dead_lettered_while_others_flow(start_stack) -> None:
    # The default test clocks: a decode slowed down by a busy machine must meet the memory
    # guard, not the task time limit (either kill would count as a crash, but the counts
    # below are exact).
    running: RunningStack = start_stack(
        worker={"max_deliveries": MAX_DELIVERIES, "max_child_memory_mb": CHILD_MEMORY_MB}
    )
    client = running.client
    cpu = next(w for w in running.stack.workers if w.kind == "cpu")
    pool_before = {p.pid for p in psutil.Process(cpu.process.pid).children()}

    poison = client.submit(flat_png(8000, 8000, channels=4), filename="poison.png", upload_id="poison")
    others = [client.submit_text(f"an ordinary caption {i}", upload_id=f"ok-{i:02d}") for i in range(40)]
    finished = client.wait([poison, *others], timeout_s=120)

    record = finished[poison]
    assert record.status is UploadStatus.FAILED and record.error_reason == "poison_message"
    assert record.failed_stage is Stage.PREPROCESS
    [letter] = client.dead_letters.entries()
    assert (letter.upload_id, letter.stage, letter.reason, letter.error_class) == (
        "poison",
        "preprocess",
        "poison_message",
        "PoisonMessage",
    )
    assert letter.attempts == MAX_DELIVERIES + 1, "crashed max_deliveries times, dead-lettered on the next delivery"
    assert {finished[i].status for i in others} == {UploadStatus.INDEXED}
    accounting = account(client, [poison, *others])
    assert not accounting.problems(), accounting.summary()

    parent = psutil.Process(cpu.process.pid)
    assert parent.is_running() and cpu.process.poll() is None, "the worker's main process survives"
    log = cpu.log_path.read_text() if cpu.log_path else ""
    assert log.count("over OMNIBIND_WORKER__MAX_CHILD_MEMORY_MB") == MAX_DELIVERIES, "one kill per delivery"
    pool_after = {p.pid for p in parent.children()}
    assert pool_after - pool_before and len(pool_after) == len(pool_before), "killed pool processes were replaced"
