"""Per-process clients and runtimes of a worker, created lazily after fork.

A prefork worker's children must not inherit sockets or CUDA state from the parent, so
nothing here is created at import; `workers.app` gives every child a fresh `Resources`
(`worker_process_init`) and each member is built on first use in that process — once, even
when the threads of a threads-pool worker ask for it at the same moment.

The GPU runner (torch) and the speech runner (faster-whisper) are built by the factories the
worker was given (`gpu_runner` from the gpu worker's entry point `workers.gpu_worker`,
`speech_runner` from `workers.speech_worker`), so no other kind of process imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.config import Settings
from shared.connections import Connections
from shared.errors import ConfigError
from shared.metrics.recorder import MetricsRecorder
from shared.moderation.moderator import RequestPrompts
from shared.status import StatusStore
from shared.streams import DeliveryCounter
from workers.indexer import IndexWriter
from workers.metrics import WorkerMetrics
from workers.moderation import ModerationRuntime
from workers.speech import SpeechRunner, SpeechRunnerFactory

if TYPE_CHECKING:
    from workers.gpu import GpuRunner

GpuRunnerFactory = Callable[[Settings], "GpuRunner"]


class Resources(Connections):
    """A worker process's clients and runtimes (model, batchers, moderation)."""

    close_order = ("gpu", "indexer", "metrics", "objects", "vectors", "redis")

    def __init__(
        self,
        settings: Settings,
        *,
        gpu_runner: GpuRunnerFactory | None = None,
        speech_runner: SpeechRunnerFactory | None = None,
        request_prompts: RequestPrompts | None = None,
    ) -> None:
        super().__init__(settings)
        self._gpu_runner = gpu_runner
        self._speech_runner = speech_runner
        self._request_prompts = request_prompts

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
            if self._gpu_runner is None:
                raise ConfigError(
                    "this worker has no model: embedding runs in gpu workers (`omnibind worker gpu`, "
                    "celery -A workers.gpu_worker)"
                )
            runner = self._gpu_runner(self.settings)
            self.metrics.track_batches("gpu", runner.batcher.stats)
            return runner

        return self._once("gpu", build)

    @property
    def indexer(self) -> IndexWriter:
        def build() -> IndexWriter:
            writer = IndexWriter(self.vectors, self.settings.index)
            self.metrics.track_batches("index", writer.batcher.stats)
            return writer

        return self._once("indexer", build)

    @property
    def speech(self) -> SpeechRunner:
        """The Whisper model (speech workers only; `ConfigError` when it cannot load)."""

        def build() -> SpeechRunner:
            if self._speech_runner is None:
                raise ConfigError(
                    "this worker has no Whisper model: transcription runs in speech workers "
                    "(`omnibind worker speech`, celery -A workers.speech_worker)"
                )
            return self._speech_runner(self.settings)

        return self._once("speech", build)

    @property
    def moderation(self) -> ModerationRuntime:
        """Policy (validated when first built: `ConfigError`), detectors, prompt cache..."""

        def build() -> ModerationRuntime:
            return ModerationRuntime(self.settings, self.redis, self._request_prompts)

        return self._once("moderation", build)
