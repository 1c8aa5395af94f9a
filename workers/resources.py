"""Per-process clients and runtimes of a worker, created lazily after fork.

A prefork worker's children must not inherit sockets or CUDA state from the parent, so
nothing here is created at import; `workers.app` gives every child a fresh `Resources`
(`worker_process_init`) and each member is built on first use in that process — once, even
when the threads of a threads-pool worker ask for it at the same moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.connections import Connections
from shared.metrics.recorder import MetricsRecorder
from shared.status import StatusStore
from shared.streams import DeliveryCounter
from workers.metrics import WorkerMetrics

if TYPE_CHECKING:
    from workers.gpu import GpuRunner
    from workers.indexer import IndexWriter
    from workers.moderation import ModerationRuntime


class Resources(Connections):
    """A worker process's clients and runtimes (model, batchers, moderation)."""

    close_order = ("gpu", "indexer", "metrics", "objects", "vectors", "redis")

    @property
    def status(self) -> StatusStore:
        return self._once("status", lambda: StatusStore.from_settings(self.redis, self.settings))

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
