"""Per-process clients and runtimes of a worker, created lazily after fork.

A prefork worker's children must not inherit sockets or CUDA state from the parent, so
nothing here is created at import; `workers.app` gives every child a fresh `Resources`
(`worker_process_init`) and each member is built on first use in that process — once, even
when the threads of a threads-pool worker ask for it at the same moment.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from shared.connections import Connections
from shared.errors import CheckpointError, ConfigError, TransientError
from shared.metrics.recorder import MetricsRecorder
from shared.status import StatusStore
from shared.streams import DeliveryCounter
from shared.vectors.records import ALL_TENANTS, SearchFilters
from workers.metrics import WorkerMetrics

if TYPE_CHECKING:
    from workers.gpu import GpuRunner
    from workers.indexer import IndexWriter
    from workers.moderation import ModerationRuntime
    from workers.speech import SpeechRunner

log = logging.getLogger(__name__)

# Exit status of a worker that cannot start: 3 = a configuration to fix (a supervisor must
# not restart it as is; the same code as workers.moderation.EXIT_CONFIG), 1 = anything else.
EXIT_CONFIG = 3
EXIT_START_FAILED = 1
# Seconds between probes of a vector store that is down at start (the last one repeats).
VECTOR_STORE_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


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
    def speech(self) -> SpeechRunner:
        """The Whisper model (speech workers only; `ConfigError` when it cannot load)."""

        def build() -> SpeechRunner:
            from workers.speech import SpeechRunner  # faster-whisper only in speech workers

            return SpeechRunner.from_settings(self.settings)

        return self._once("speech", build)

    @property
    def moderation(self) -> ModerationRuntime:
        """Policy (validated when first built: `ConfigError`), detectors, prompt cache..."""

        def build() -> ModerationRuntime:
            from workers.moderation import ModerationRuntime

            return ModerationRuntime(self.settings, self.redis)

        return self._once("moderation", build)


@contextlib.contextmanager
def exit_if_start_fails(kind: str) -> Iterator[None]:
    """Turn an error of a worker's start-up into the exit of the process.

    Celery logs an exception raised by a ``worker_init`` handler and starts consuming anyway,
    so a worker without its model would heartbeat as healthy and fail every task. A
    `ConfigError` or `CheckpointError` (the message says what to fix) exits with
    `EXIT_CONFIG` and no traceback; anything else with `EXIT_START_FAILED` and its traceback.
    """
    try:
        yield
    except (ConfigError, CheckpointError) as exc:
        log.critical("the %s worker cannot start: %s", kind, exc)
        raise SystemExit(EXIT_CONFIG) from exc
    except Exception as exc:
        log.critical("the %s worker cannot start: %s", kind, exc, exc_info=True)
        raise SystemExit(EXIT_START_FAILED) from exc


def wait_for_vector_store(
    resources: Resources,
    *,
    retry_s: Sequence[float] = VECTOR_STORE_RETRY_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until the vector store answers (one `count`), so an index worker reports ready
    only once it can write.

    A store that is unavailable (`TransientError`: still starting, restarting, a network
    blip) is waited for, with `retry_s` between probes, forever: the worker stays not ready
    meanwhile and starts consuming when it answers. A `ConfigError` (a wrong API key or URL,
    a collection of another schema or dimension) is raised at once: waiting cannot fix it.
    """
    for attempt in itertools.count():
        try:
            resources.vectors.count(SearchFilters(scope=ALL_TENANTS))
        except TransientError as exc:
            delay = retry_s[min(attempt, len(retry_s) - 1)]
            log.warning(
                "vector store not reachable at start (%s); retrying in %.0f s: this index worker reports "
                "ready once it answers",
                exc,
                delay,
            )
            sleep(delay)
        else:
            if attempt:
                log.info("vector store answers after %d attempts", attempt + 1)
            return
