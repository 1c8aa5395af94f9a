"""Recording metrics in a worker process: counted in memory, added to Redis once a second.

Why Redis rather than a Prometheus endpoint per worker: workers are prefork children and
thread pools in any number of containers on any number of hosts. Per-process endpoints
would need service discovery for every scaled replica and lose their counts on each
restart; prometheus_client's multiprocess mode covers one host only. Every worker already
talks to Redis, so the counters are kept there: one scrape target (an exporter reading
Redis) sees the whole pipeline, and counts survive worker restarts.

Why buffered: recording is a dict update under a lock (microseconds), and a daemon thread
adds the accumulated deltas to Redis every `flush_interval_s` in one MULTI/EXEC pipeline
(all or nothing, so a failed flush is retried without counting anything twice). An upload
pays no Redis round trip for metrics. What a process records in its last interval before a
hard kill (SIGKILL, OOM) is lost; `close()` flushes on an orderly shutdown.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis

from shared.errors import OmnibindError
from shared.metrics.catalog import COUNT, SUM, Family, labels_field
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0
Source = Callable[["MetricsRecorder"], None]


class MetricsRecorder:
    """Counters and histograms of one process, flushed to Redis in the background.

    Thread-safe. Each process needs its own recorder (create it after fork); the flush
    thread starts on the first recording. `enabled=False` makes every call a no-op.
    """

    def __init__(
        self, client: redis.Redis, prefix: str, *, flush_interval_s: float = 1.0, enabled: bool = True
    ) -> None:
        self._redis = client
        self._keys = RedisKeys(prefix)
        self.flush_interval_s = flush_interval_s
        self.enabled = enabled
        self._lock = threading.Lock()
        self._ints: defaultdict[tuple[str, str], int] = defaultdict(int)  # (family, field) -> delta
        self._floats: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._sources: list[Source] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._last_warning_s = -_WARN_EVERY_S

    # -- recording ---------------------------------------------------------------------------

    def inc(self, family: Family, labels: Sequence[str], by: int = 1) -> None:
        """Add `by` to counter `family` at `labels` (one value per label name, in order)."""
        if not self.enabled or by == 0:
            return
        _check(family, "counter", labels)
        with self._lock:
            self._ints[family.name, labels_field(labels)] += by
        self._ensure_flushing()

    def observe(self, family: Family, labels: Sequence[str], value: float, *, count: int = 1) -> None:
        """Record `count` observations of `value` in histogram `family` at `labels`."""
        if not self.enabled or count <= 0:
            return
        _check(family, "histogram", labels)
        series = labels_field(labels)
        bucket = f"{series}\t{family.bucket_of(value)}"
        with self._lock:
            self._ints[family.name, bucket] += count
            self._ints[family.name, f"{series}\t{COUNT}"] += count
            self._floats[family.name, f"{series}\t{SUM}"] += value * count
        self._ensure_flushing()

    def add_source(self, source: Source) -> None:
        """Call `source(self)` before every flush (to turn another component's cumulative
        statistics into recordings) and start flushing."""
        if not self.enabled:
            return
        with self._lock:
            self._sources.append(source)
        self._ensure_flushing()

    # -- flushing ----------------------------------------------------------------------------

    def flush(self) -> bool:
        """Add everything recorded since the last flush to Redis. Returns True when written
        (or nothing was pending); on failure the deltas are kept for the next flush and
        False is returned. Never raises for Redis trouble."""
        for source in list(self._sources):
            try:
                source(self)
            except Exception:  # a broken source must not stop the other metrics
                log.exception("metrics source failed")
        with self._lock:
            ints, self._ints = self._ints, defaultdict(int)
            floats, self._floats = self._floats, defaultdict(float)
        if not ints and not floats:
            return True
        try:
            self._write(ints, floats)
        except OmnibindError as exc:
            self._merge_back(ints, floats)
            now_s = time.monotonic()
            if now_s - self._last_warning_s >= _WARN_EVERY_S:
                self._last_warning_s = now_s
                log.warning("metrics not written to Redis (kept for the next flush): %s", exc)
            return False
        return True

    def close(self) -> None:
        """Stop the flush thread and flush what is left (best effort)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.flush_interval_s + 5.0)
        if self.enabled and os.getpid() == self._owner_pid:
            self.flush()

    def _write(self, ints: dict[tuple[str, str], int], floats: dict[tuple[str, str], float]) -> None:
        with translate_redis_errors("writing metrics"):
            pipe: Any = self._redis.pipeline(transaction=True)
            for (family, field), delta in ints.items():
                if delta:
                    pipe.hincrby(self._keys.metrics(family), field, delta)
            for (family, field), value in floats.items():
                pipe.hincrbyfloat(self._keys.metrics(family), field, value)
            pipe.execute()

    def _merge_back(self, ints: dict[tuple[str, str], int], floats: dict[tuple[str, str], float]) -> None:
        with self._lock:
            for key, delta in ints.items():
                self._ints[key] += delta
            for key, value in floats.items():
                self._floats[key] += value

    def _ensure_flushing(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None and os.getpid() == self._owner_pid:
                self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()


def _check(family: Family, kind: str, labels: Sequence[str]) -> None:
    if family.kind != kind:
        raise ValueError(f"{family.name} is a {family.kind}, not a {kind}")
    if len(labels) != len(family.labels):
        raise ValueError(f"{family.name} takes labels {family.labels}, got {tuple(labels)}")
