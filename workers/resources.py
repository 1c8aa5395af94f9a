"""Per-process clients and runtimes of a worker, created lazily after fork.

A prefork worker's children must not inherit sockets or CUDA state from the parent, so
nothing here is created at import; `workers.app` gives every child a fresh `Resources`
(`worker_process_init`) and each member is built on first use in that process — once, even
when the threads of a threads-pool worker ask for it at the same moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from shared.config import Settings
from shared.metrics.recorder import MetricsRecorder
from shared.objects.factory import open_object_store
from shared.objects.store import ObjectStore
from shared.redis_client import redis_client_from_settings
from shared.status import StatusStore
from shared.streams import DeadLetterStream, DeliveryCounter
from shared.vectors.factory import open_vector_store
from shared.vectors.store import VectorStore
from workers.metrics import WorkerMetrics

if TYPE_CHECKING:
    from workers.gpu import GpuRunner
    from workers.indexer import IndexWriter
    from workers.moderation import ModerationRuntime

T = TypeVar("T")


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]  # type: ignore[no-any-return]

    @property
    def redis(self) -> redis.Redis:
        return self._once("redis", lambda: redis_client_from_settings(self.settings))

    @property
    def status(self) -> StatusStore:
        return self._once("status", lambda: StatusStore.from_settings(self.redis, self.settings))

    @property
    def dead_letters(self) -> DeadLetterStream:
        return self._once("dead_letters", lambda: DeadLetterStream.from_settings(self.redis, self.settings))

    @property
    def deliveries(self) -> DeliveryCounter:
        return self._once("deliveries", lambda: DeliveryCounter.from_settings(self.redis, self.settings))

    @property
    def metrics(self) -> WorkerMetrics:
        def build() -> WorkerMetrics:
            opts = self.settings.metrics
            recorder = MetricsRecorder(
                self.redis, self.settings.queue_prefix, flush_interval_s=opts.flush_interval_s, enabled=opts.enabled
            )
            return WorkerMetrics(recorder)

        return self._once("metrics", build)

    @property
    def objects(self) -> ObjectStore:
        return self._once("objects", lambda: open_object_store(self.settings))

    @property
    def vectors(self) -> VectorStore:
        return self._once("vectors", lambda: open_vector_store(self.settings))

    @property
    def gpu(self) -> GpuRunner:
        def build() -> GpuRunner:
            from workers.gpu import GpuRunner  # torch model code only in processes that embed

            runner = GpuRunner.from_settings(self.settings)
            self.metrics.track_batches("gpu", runner.batcher.stats)
            return runner

        return self._once("gpu", build)

    @property
    def indexer(self) -> IndexWriter:
        def build() -> IndexWriter:
            from workers.indexer import IndexWriter

            writer = IndexWriter(self.vectors, self.settings.index)
            self.metrics.track_batches("index", writer.batcher.stats)
            return writer

        return self._once("indexer", build)

    @property
    def moderation(self) -> ModerationRuntime:
        """Policy (validated when first built: `ConfigError`), detectors, prompt cache..."""

        def build() -> ModerationRuntime:
            from workers.moderation import ModerationRuntime

            return ModerationRuntime(self.settings, self.redis)

        return self._once("moderation", build)

    def built(self) -> dict[str, Any]:
        """The members built so far in this process (a snapshot; builds nothing)."""
        with self._lock:
            return dict(self._built)

    def close(self) -> None:
        """Stop runtimes first (they flush through the clients), then close the clients."""
        with self._lock:
            built, self._built = self._built, {}
        for name in ("gpu", "indexer", "metrics", "objects", "vectors"):
            member = built.get(name)
            if member is not None:
                member.close()
