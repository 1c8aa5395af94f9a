from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from workers.batcher import MicroBatcher


def _squaring_batcher(calls: list[tuple[str, list[int]]], *, max_batch: int = 8, max_wait_s: float = 0.05):
    def launch(key: str, items: list[int]) -> list[int]:
        calls.append((key, list(items)))
        return [x * x for x in items]

    return MicroBatcher(
        launch,
        lambda handle: handle,
        group_of=lambda x: "even" if x % 2 == 0 else "odd",
        max_batch=max_batch,
        max_wait_s=max_wait_s,
    )


class BlockingLaunch:
    """A launch that records each batch (`keys`, `batches`) and holds the batch of exactly
    `block_on` until `release` is set (`running` tells it started)."""

    def __init__(self, block_on: list[int]) -> None:
        self.block_on = block_on
        self.keys: list[str] = []
        self.batches: list[list[int]] = []
        self.running = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: str, items: list[int]) -> list[int]:
        self.keys.append(key)
        self.batches.append(list(items))
        if items == self.block_on:
            self.running.set()
            self.release.wait(10)
        return items


def test_each_submitter_gets_its_own_result_from_shared_batches() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher = _squaring_batcher(calls)
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda x: batcher.submit(x).result(timeout=10), range(64)))
    batcher.close()
    assert results == [x * x for x in range(64)]
    assert sum(len(items) for _, items in calls) == 64
    assert len(calls) < 64, "items from concurrent tasks should share batches"


def test_batches_never_mix_groups_or_exceed_max_batch() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher = _squaring_batcher(calls, max_batch=5)
    futures = [batcher.submit(x) for x in range(40)]
    assert [f.result(timeout=10) for f in futures] == [x * x for x in range(40)]
    batcher.close()
    for key, items in calls:
        assert len(items) <= 5
        assert {("even" if x % 2 == 0 else "odd") for x in items} == {key}
    assert batcher.stats.items == 40
    assert sum(size * n for size, n in batcher.stats.size_histogram.items()) == 40


def test_a_lone_item_runs_after_max_wait_instead_of_waiting_for_a_full_batch() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher = _squaring_batcher(calls, max_batch=1000, max_wait_s=0.01)
    assert batcher.submit(3).result(timeout=10) == 9
    batcher.close()


def test_a_failing_batch_fails_all_its_items_and_only_them() -> None:
    def launch(key: str, items: list[int]) -> list[int]:
        if key == "bad":
            raise MemoryError("out of memory")
        return items

    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        launch, lambda h: h, group_of=lambda x: "bad" if x < 0 else "good", max_batch=16, max_wait_s=0.01
    )
    bad = [batcher.submit(-i - 1) for i in range(3)]
    good = [batcher.submit(i) for i in range(3)]
    assert [f.result(timeout=10) for f in good] == [0, 1, 2]
    for future in bad:
        with pytest.raises(MemoryError):
            future.result(timeout=10)
    assert batcher.stats.failures == 1
    batcher.close()


def test_collect_returning_the_wrong_count_is_an_error_not_a_silent_mismatch() -> None:
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        lambda key, items: items, lambda h: h[:-1], group_of=lambda x: "g", max_batch=4, max_wait_s=0.01
    )
    with pytest.raises(RuntimeError, match="returned"):
        batcher.submit(1).result(timeout=10)
    batcher.close()


def test_the_oldest_group_runs_first() -> None:
    release = threading.Event()
    order: list[str] = []

    def launch(key: str, items: list[str]) -> list[str]:
        if key == "block":
            release.wait(10)
        order.append(key)
        return items

    batcher: MicroBatcher[str, str, str] = MicroBatcher(
        launch, lambda h: h, group_of=lambda x: x.split(":")[0], max_batch=100, max_wait_s=0.0
    )
    blocker = batcher.submit("block:0")
    while batcher.pending():  # the blocker is running; queue the rest behind it
        pass
    first = [batcher.submit("audio:1"), batcher.submit("image:1")]
    second = [batcher.submit("text:1")]
    release.set()
    for future in [blocker, *first, *second]:
        future.result(timeout=10)
    batcher.close()
    assert order == ["block", "audio", "image", "text"]


def test_max_batch_can_adapt_between_batches() -> None:
    limit = [4]
    sizes: list[tuple[int, int]] = []

    def launch(key: str, items: list[int]) -> list[int]:
        sizes.append((limit[0], len(items)))
        return items

    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        launch, lambda h: h, group_of=lambda x: "g", max_batch=lambda: limit[0], max_wait_s=0.02
    )
    for new_limit in (4, 2, 1):
        limit[0] = new_limit
        futures = [batcher.submit(i) for i in range(8)]
        assert [f.result(timeout=10) for f in futures] == list(range(8))
    batcher.close()
    assert all(size <= cap for cap, size in sizes)
    assert {cap for cap, _ in sizes} == {4, 2, 1}


def test_close_fails_items_that_never_ran() -> None:
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        lambda key, items: items, lambda h: h, group_of=lambda x: "g", max_batch=100, max_wait_s=60.0
    )
    future = batcher.submit(1)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        future.result(timeout=10)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(2)


def test_an_exception_returned_for_one_item_fails_that_item_alone() -> None:
    def collect(items: list[int]) -> list[object]:
        return [ValueError(f"bad {x}") if x == 2 else x for x in items]

    batcher: MicroBatcher[str, int, object] = MicroBatcher(
        lambda key, items: items, collect, group_of=lambda x: "g", max_batch=3, max_wait_s=10.0
    )
    futures = [batcher.submit(x) for x in (1, 2, 3)]
    assert futures[0].result(timeout=10) == 1
    assert futures[2].result(timeout=10) == 3
    with pytest.raises(ValueError, match="bad 2"):
        futures[1].result(timeout=10)
    batcher.close()


def test_a_lone_item_after_a_quiet_spell_runs_at_once() -> None:
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        lambda key, items: items, lambda h: h, group_of=lambda x: "g", max_batch=100, max_wait_s=600.0
    )
    assert batcher.submit(7).result(timeout=10) == 7  # not after 600 s
    batcher.close()


def test_items_arriving_close_together_wait_for_company() -> None:
    launch = BlockingLaunch(block_on=[1])
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        launch, lambda h: h, group_of=lambda x: "g", max_batch=2, max_wait_s=600.0
    )
    first = batcher.submit(1)  # after a quiet spell: runs at once
    launch.running.wait(10)
    rest = [batcher.submit(2), batcher.submit(3)]  # close behind it: batched together
    launch.release.set()
    assert [f.result(timeout=10) for f in (first, *rest)] == [1, 2, 3]
    batcher.close()
    assert launch.batches == [[1], [2, 3]]


def test_a_client_sending_one_item_at_a_time_waits_for_company_at_most_once() -> None:
    # Each item is sent as soon as the previous result is back (a closed loop): items never
    # overlap, so after one wait that gathered nobody, the rest run at once. A long max_wait_s
    # keeps "waited for company" and "ran at once" apart on a loaded machine: at 0.3 s a round
    # trip slowed past it made the next item look sparse and shifted the one wait.
    max_wait_s = 2.0
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        lambda key, items: items, lambda h: h, group_of=lambda x: "g", max_batch=8, max_wait_s=max_wait_s
    )
    waits = []
    for x in range(8):
        start = time.monotonic()
        assert batcher.submit(x).result(timeout=10) == x
        waits.append(time.monotonic() - start)
    batcher.close()
    assert sum(wait >= max_wait_s for wait in waits) <= 1, waits
    assert all(wait < max_wait_s / 2 for wait in waits[2:]), waits


def test_items_that_overlap_again_wait_for_company_again() -> None:
    launch = BlockingLaunch(block_on=[3])
    # A long max_wait_s, so that 5 comes within 4's wait however slow this machine is; two
    # make a full batch, which runs as soon as 5 arrives.
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        launch, lambda h: h, group_of=lambda x: "g", max_batch=2, max_wait_s=3.0
    )
    assert batcher.submit(1).result(timeout=10) == 1  # first: at once
    assert batcher.submit(2).result(timeout=10) == 2  # close behind: waits, for nobody
    third = batcher.submit(3)  # runs at once now, and blocks
    launch.running.wait(10)
    fourth = batcher.submit(4)  # arrives while 3 runs: company is coming again
    launch.release.set()
    third.result(timeout=10)
    fifth = batcher.submit(5)  # within 4's wait
    assert [fourth.result(timeout=10), fifth.result(timeout=10)] == [4, 5]
    batcher.close()
    assert launch.batches == [[1], [2], [3], [4, 5]]


def test_item_costs_cap_a_batch_and_a_burst_of_heavy_items_does_not_starve_light_ones() -> None:
    # "videos" (cost 15) and "images" (cost 1) under a cap of 64: at most 4 videos per batch
    calls: list[tuple[str, list[int]]] = []
    gate = threading.Event()
    held = threading.Event()

    def launch(key: str, items: list[int]) -> list[int]:
        held.set()
        gate.wait(10)  # hold the first batch so that everything queues behind it
        calls.append((key, list(items)))
        return list(items)

    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        launch,
        lambda handle: handle,
        group_of=lambda x: "video" if x >= 1000 else "image",
        cost_of=lambda x: 15 if x >= 1000 else 1,
        max_batch=64,
        max_wait_s=0.01,
    )
    first = batcher.submit(1000)
    assert held.wait(10)  # the first video is running (held by the gate)
    videos = [batcher.submit(1001 + i) for i in range(20)]
    images = [batcher.submit(i) for i in range(10)]
    gate.set()
    for future in [first, *videos, *images]:
        future.result(timeout=10)
    batcher.close()
    video_batches = [items for key, items in calls if key == "video"]
    assert all(len(items) <= 4 for items in video_batches)
    assert sum(len(items) for items in video_batches) == 21
    # the images, queued after 20 videos, run after at most one more (capped) video batch
    image_at = next(i for i, (key, _) in enumerate(calls) if key == "image")
    assert image_at <= 2


def test_an_item_heavier_than_the_cap_still_runs_alone() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        lambda key, items: calls.append((key, list(items))) or list(items),
        lambda handle: handle,
        group_of=lambda x: "video",
        cost_of=lambda x: 15,
        max_batch=8,
        max_wait_s=0.01,
    )
    assert [batcher.submit(i).result(timeout=10) for i in range(3)] == [0, 1, 2]
    batcher.close()
    assert all(len(items) == 1 for _, items in calls)


def test_an_urgent_item_launches_its_group_without_waiting_for_company() -> None:
    # A flood's items overlap, so the group waits for company (600 s here); an urgent item (a
    # sparse tenant's upload) arriving behind them launches the batch at once, them included.
    launch = BlockingLaunch(block_on=[1])
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        launch, lambda h: h, group_of=lambda x: "g", max_batch=8, max_wait_s=600.0
    )
    first = batcher.submit(1)  # after a quiet spell: runs at once, and blocks
    launch.running.wait(10)
    flood = [batcher.submit(2), batcher.submit(3)]  # arrive while 1 runs: they would wait
    launch.release.set()
    first.result(timeout=10)
    # Time in which a batcher that did not wait for company would have run 2 and 3: it must not.
    time.sleep(0.2)
    assert not any(f.done() for f in flood), "without an urgent item the group waits for company"
    urgent = batcher.submit(4, urgent=True)
    assert [f.result(timeout=10) for f in (*flood, urgent)] == [2, 3, 4]  # not after 600 s
    batcher.close()
    assert launch.batches == [[1], [2, 3, 4]]


def test_a_group_holding_an_urgent_item_goes_before_other_due_groups() -> None:
    launch = BlockingLaunch(block_on=[0])
    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        launch, lambda h: h, group_of=lambda x: "even" if x % 2 == 0 else "odd", max_batch=2, max_wait_s=600.0
    )
    blocker = batcher.submit(0)  # runs at once and holds the batcher
    launch.running.wait(10)
    full = [batcher.submit(11), batcher.submit(13)]  # "odd" is full (due) and older
    urgent = batcher.submit(2, urgent=True)  # "even" holds an urgent item
    launch.release.set()
    for future in (blocker, *full, urgent):
        future.result(timeout=10)
    batcher.close()
    assert list(zip(launch.keys, launch.batches, strict=True)) == [("even", [0]), ("even", [2]), ("odd", [11, 13])]
