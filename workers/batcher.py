"""Dynamic micro-batching across concurrently running tasks (Triton / Infinity style).

Celery runs each embed (or index) task in its own thread; the task submits its item here and
blocks on the returned future. One dispatcher thread groups pending items by key (modality,
text length bucket...), and launches a batch when a group is full (`max_batch`) or its oldest
item has waited `max_wait_s` — or at once when nothing suggests company is coming: the item
arrived after a quiet spell of `max_wait_s`, or the group's last wait gathered nobody and no
item has since arrived while another was pending or running (a client that sends one
upload at a time, whatever its pace, pays no batching delay) — or at once when it holds an
urgent item (a sparse tenant's upload beside another's flood: `shared.fair_queue`), which
also goes before other due groups. Under load batches also grow
by themselves: items arriving while a batch runs wait for the next one. Due groups take
turns (the one served longest ago first, then the oldest head), so a slow group (long audio)
or a backlog (a burst of videos) never holds another group's items behind all of it.

Launching and collecting are separate steps run by two threads: on CUDA `launch` only queues
kernels (returns at once) and `collect` waits for the results, so the next batch is prepared
and its host-to-device copy issued while the GPU still computes the previous one. On CPU
`launch` does the work and `collect` just hands the results back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")  # item submitted by a task
R = TypeVar("R")  # result handed back to that task
K = TypeVar("K", bound=Hashable)  # group key

Launch = Callable[[K, list[T]], Any]
Collect = Callable[[Any], Sequence[R]]


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: Future[R]
    enqueued_s: float = field(default_factory=time.monotonic)
    # Time since the previous item of the same group arrived: a long gap means sparse traffic,
    # where waiting for company would only add latency.
    gap_s: float = float("inf")
    urgent: bool = False


@dataclass
class BatchStats:
    """Counters a benchmark or metrics exporter can read (sizes histogram, waits)."""

    batches: int = 0
    items: int = 0
    size_histogram: dict[int, int] = field(default_factory=dict)
    failures: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "items": self.items,
            "failures": self.failures,
            "size_histogram": {str(size): n for size, n in sorted(self.size_histogram.items())},
        }

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.size_histogram[size] = self.size_histogram.get(size, 0) + 1


class MicroBatcher(Generic[K, T, R]):
    """Batch items from many threads; each submitter gets its own result or exception.

    `launch(key, items)` starts the work for one batch and returns a handle;
    `collect(handle)` returns one result per item, in order; a result that is an exception
    fails that item alone. An exception from either is set
    on every future of that batch (the callers decide about retries: a failed batch must
    never count as done). `max_batch` may be a callable so the caller can adapt it (e.g.
    shrink after a CUDA out-of-memory error). `cost_of(item)` (default 1) is what an item
    weighs against `max_batch`: a batch takes items while their costs fit (always at least
    one), and a group is full when its queued costs reach it.
    """

    def __init__(
        self,
        launch: Launch[K, T],
        collect: Collect[R],
        *,
        group_of: Callable[[T], K],
        cost_of: Callable[[T], int] | None = None,
        max_batch: int | Callable[[], int],
        max_wait_s: float,
        name: str = "batcher",
    ) -> None:
        self._launch = launch
        self._collect = collect
        self._group_of = group_of
        self._cost_of = cost_of or (lambda item: 1)
        self._max_batch = max_batch if callable(max_batch) else (lambda: max_batch)
        self._max_wait_s = max_wait_s
        self._name = name
        self._groups: dict[K, deque[_Pending[T, R]]] = {}
        self._last_arrival_s: dict[K, float] = {}
        # Per group: batches taken but not yet collected, and whether waiting is worth it
        # (False after a wait that gathered nobody, True again once items overlap).
        self._running: Counter[K] = Counter()
        self._company_expected: dict[K, bool] = {}
        # Per group: the number of the batch last taken from it (round robin among due groups).
        self._last_launch: dict[K, int] = {}
        self._launches = 0
        self._cond = threading.Condition()
        self._closed = False
        # One launched batch may wait for collection while the next one is being prepared.
        self._launched: queue.Queue[tuple[K, Any, list[_Pending[T, R]]] | None] = queue.Queue(maxsize=1)
        self.stats = BatchStats()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name=f"{name}-dispatch", daemon=True)
        self._collector = threading.Thread(target=self._collect_loop, name=f"{name}-collect", daemon=True)
        self._dispatcher.start()
        self._collector.start()

    def submit(self, item: T, *, urgent: bool = False) -> Future[R]:
        """Queue `item` for the next batch of its group; the future holds its result. An
        `urgent` item's group launches as soon as the batcher is free, without waiting for
        company."""
        future: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            key = self._group_of(item)
            now = time.monotonic()
            gap_s = now - self._last_arrival_s.get(key, float("-inf"))
            self._last_arrival_s[key] = now
            group = self._groups.setdefault(key, deque())
            if group or self._running[key]:
                self._company_expected[key] = True  # items overlap: batching pays
            group.append(_Pending(item, future, now, gap_s, urgent))
            self._cond.notify()
        return future

    def pending(self) -> int:
        with self._cond:
            return sum(len(group) for group in self._groups.values())

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting items, fail what is still queued, and stop the threads."""
        with self._cond:
            self._closed = True
            leftovers = [p for group in self._groups.values() for p in group]
            self._groups.clear()
            self._cond.notify_all()
        for pending in leftovers:
            pending.future.set_exception(RuntimeError(f"{self._name} closed before the item ran"))
        self._dispatcher.join(timeout_s)
        self._collector.join(timeout_s)

    # -- dispatcher side ---------------------------------------------------------------

    def _next_batch(self) -> tuple[K, list[_Pending[T, R]]] | None:
        """Wait until some group is due, then take up to max_batch items from it.
        Returns None when closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                due = self._due_group()
                if due is not None:
                    key, head_age_s = due
                    group = self._groups[key]
                    size = self._fitting(group, max(1, self._max_batch()))
                    if size == 1 and head_age_s >= self._max_wait_s:
                        self._company_expected[key] = False  # waited the full time for nobody
                    batch = [group.popleft() for _ in range(size)]
                    if not group:
                        del self._groups[key]
                    self._running[key] += 1
                    self._launches += 1
                    self._last_launch[key] = self._launches
                    return key, batch
                self._cond.wait(timeout=self._time_to_next_deadline())

    def _due_group(self) -> tuple[K, float] | None:
        """The group to run now, among groups that hold an urgent item, are full, whose head
        waited max_wait_s, or whose head came after a quiet spell of at least max_wait_s
        (light load: nothing suggests company is coming): one with an urgent item first."""
        now = time.monotonic()
        limit = max(1, self._max_batch())
        best: tuple[K, float] | None = None
        best_rank: tuple[bool, int, float] = (True, 0, 0.0)
        for key, group in self._groups.items():
            head = group[0]
            head_age_s = now - head.enqueued_s
            urgent = any(p.urgent for p in group)
            due = (
                urgent
                or self._fitting(group, limit) < len(group)
                or sum(self._cost_of(p.item) for p in group) >= limit
                or head_age_s >= self._max_wait_s
                or head.gap_s >= self._max_wait_s
                or not self._company_expected.get(key, True)
            )
            if not due:
                continue
            # Round robin among due groups by their last launch, then the oldest head: a
            # group with a backlog (a burst of videos) takes turns with the others instead
            # of running its whole backlog first.
            rank = (not urgent, self._last_launch.get(key, 0), -head_age_s)
            if best is None or rank < best_rank:
                best, best_rank = (key, head_age_s), rank
        return best

    def _fitting(self, group: deque[_Pending[T, R]], limit: int) -> int:
        """How many items from the head of `group` one batch takes: as many as fit in
        `limit` by cost, at least one."""
        total = 0
        for count, pending in enumerate(group):
            total += self._cost_of(pending.item)
            if total > limit:
                return max(1, count)
        return len(group)

    def _time_to_next_deadline(self) -> float | None:
        if not self._groups:
            return None
        oldest = min(group[0].enqueued_s for group in self._groups.values())
        return max(0.0, oldest + self._max_wait_s - time.monotonic())

    def _dispatch_loop(self) -> None:
        while (next_batch := self._next_batch()) is not None:
            key, batch = next_batch
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not batch:
                self._done_running(key)
                continue
            try:
                handle = self._launch(key, [p.item for p in batch])
            except BaseException as exc:  # every submitter must hear about it
                self._done_running(key)
                self._fail(batch, exc)
                continue
            self._launched.put((key, handle, batch))
        self._launched.put(None)

    def _done_running(self, key: K) -> None:
        # Before the results go out: the next item a waiting client sends must find the
        # group idle.
        with self._cond:
            self._running[key] -= 1

    # -- collector side ----------------------------------------------------------------

    def _collect_loop(self) -> None:
        while (launched := self._launched.get()) is not None:
            key, handle, batch = launched
            try:
                results = self._collect(handle)
                if len(results) != len(batch):
                    raise RuntimeError(f"{self._name}: batch of {len(batch)} returned {len(results)} results")
            except BaseException as exc:
                self._done_running(key)
                self._fail(batch, exc)
                continue
            self._done_running(key)
            self.stats.record(len(batch))
            for pending, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):  # that item alone failed
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    def _fail(self, batch: list[_Pending[T, R]], exc: BaseException) -> None:
        self.stats.failures += 1
        log.warning("%s: batch of %d failed: %s: %s", self._name, len(batch), type(exc).__name__, exc)
        for pending in batch:
            pending.future.set_exception(exc)
