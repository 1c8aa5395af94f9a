"""What the pipeline measures, in the words of the pipeline (stages, statuses, batches).

A thin, typed layer over `shared.metrics.recorder.MetricsRecorder`: `workers.stage` calls
it for every stage outcome, the index task for every indexed upload, and the GPU/index
runtimes' batch statistics are polled before each flush. The metric names are listed in
`shared.metrics.catalog` and docs/operations.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from shared.events import Modality, Moderation, Stage, UploadStatus, utcnow
from shared.metrics import catalog
from shared.metrics.recorder import MetricsRecorder

STAGE_REACHES = {
    Stage.PREPROCESS: UploadStatus.PREPROCESSED,
    Stage.EMBED: UploadStatus.EMBEDDED,
    Stage.MODERATE: UploadStatus.MODERATED,
    Stage.INDEX: UploadStatus.INDEXED,
}


class BatchCounts(Protocol):
    """What `workers.batcher.BatchStats` offers: cumulative counts of one batcher."""

    size_histogram: dict[int, int]
    failures: int


class BatchTracker:
    """Turns a batcher's cumulative statistics into recordings of what changed since the
    previous flush."""

    def __init__(self, runtime: str, stats: BatchCounts) -> None:
        self.runtime = runtime
        self._stats = stats
        self._seen_sizes: dict[int, int] = {}
        self._seen_failures = 0

    def __call__(self, recorder: MetricsRecorder) -> None:
        # dict() copies in one step under the GIL, so the batcher thread may go on updating.
        sizes = dict(self._stats.size_histogram)
        for size, total in sizes.items():
            recorder.observe(
                catalog.BATCH_SIZE, (self.runtime,), float(size), count=total - self._seen_sizes.get(size, 0)
            )
        self._seen_sizes = sizes
        failures = self._stats.failures
        recorder.inc(catalog.BATCH_FAILURES, (self.runtime,), failures - self._seen_failures)
        self._seen_failures = failures


class WorkerMetrics:
    def __init__(self, recorder: MetricsRecorder) -> None:
        self.recorder = recorder

    def stage_finished(self, stage: Stage, *, ok: bool, duration_s: float) -> None:
        """One stage task ended: handed on (`ok`), or failed / scheduled for a retry."""
        self.recorder.observe(catalog.STAGE_DURATION, (stage.value, "ok" if ok else "error"), duration_s)

    def reached(self, stage: Stage, submitted_at: datetime) -> None:
        """An upload got through `stage`: record the time since its submission."""
        status = STAGE_REACHES[stage]
        if submitted_at.tzinfo is None:  # producers in other languages may omit the offset
            submitted_at = submitted_at.replace(tzinfo=UTC)
        elapsed_s = max(0.0, (utcnow() - submitted_at).total_seconds())
        self.recorder.observe(catalog.UPLOAD_LATENCY, (status.value,), elapsed_s)

    def failed(self, stage: Stage, reason: str) -> None:
        self.recorder.inc(catalog.UPLOADS_FAILED, (stage.value, reason))

    def retried(self, stage: Stage, reason: str) -> None:
        self.recorder.inc(catalog.STAGE_RETRIES, (stage.value, reason))

    def redriven(self, reason: str) -> None:
        self.recorder.inc(catalog.DEAD_LETTERS_REDRIVEN, (reason,))

    def indexed(self, modality: Modality, moderation: Moderation) -> None:
        self.recorder.inc(catalog.UPLOADS_INDEXED, (modality.value,))
        if moderation.flagged:
            self.recorder.inc(catalog.UPLOADS_FLAGGED, (modality.value,))
        for category in moderation.categories:
            self.recorder.inc(catalog.FLAGGED_CATEGORIES, (category,))

    def track_batches(self, runtime: str, stats: BatchCounts) -> None:
        self.recorder.add_source(BatchTracker(runtime, stats))

    def close(self) -> None:
        self.recorder.close()
