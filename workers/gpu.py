"""The GPU worker's runtime: one model per process, micro-batched across embed tasks.

Items are grouped by modality — and texts by their EOT position (rounded up to 8), since a
batch is cut after its longest text — so each forward runs on same-shaped inputs and a long
audio never holds images behind it. A batch that hits CUDA out-of-memory is split in halves
and the batch cap shrinks; after a run of successes the cap grows back. A batch that fails
for another reason is re-run item by item so one bad input fails alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.config import GpuSettings, ModelSettings, Settings
from shared.errors import CheckpointError, TransientError
from shared.events import Modality
from shared.imagebind.constants import TEXT_EOT_TOKEN
from shared.imagebind.embed import Embedder
from workers.batcher import MicroBatcher

log = logging.getLogger(__name__)

GROW_AFTER_BATCHES = 50
TEXT_BUCKET = 8


class GpuOutOfMemory(TransientError):
    reason = "gpu_out_of_memory"


@dataclass(frozen=True, slots=True)
class EmbedItem:
    modality: Modality
    array: np.ndarray

    @property
    def group(self) -> tuple[Modality, int]:
        if self.modality is Modality.TEXT:
            hits = np.flatnonzero(self.array == TEXT_EOT_TOKEN)
            length = int(hits[0]) + 1 if hits.size else int(self.array.shape[-1])
            return self.modality, -(-length // TEXT_BUCKET) * TEXT_BUCKET
        if self.modality is Modality.AUDIO:
            return self.modality, int(self.array.shape[0])  # clips per item
        return self.modality, 0


Result = np.ndarray | BaseException


def default_max_batch(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 8


def checkpoint_fix(exc: CheckpointError, settings: ModelSettings) -> str:
    """What to change when the checkpoint of `settings` cannot be loaded (`exc`)."""
    default = "the seeded random tiny checkpoint" if settings.name == "tiny" else "the official download"
    if exc.reason == "checkpoint_incompatible":
        return (
            f"set OMNIBIND_MODEL__NAME to the model this file holds, or point OMNIBIND_MODEL__CHECKPOINT "
            f"at an ImageBind {settings.name} checkpoint."
        )
    if settings.checkpoint is not None:
        return (
            f"point OMNIBIND_MODEL__CHECKPOINT at a complete ImageBind {settings.name} checkpoint "
            f"(a state_dict of tensors), or unset it to use {default}."
        )
    return (
        "delete the file from the cache so that it is fetched again, or point OMNIBIND_MODEL__CHECKPOINT "
        f"at a local ImageBind {settings.name} checkpoint."
    )


class GpuRunner:
    """Embeds items submitted from many task threads in shared batches."""

    def __init__(self, embedder: Embedder, settings: GpuSettings) -> None:
        self.embedder = embedder
        self.max_batch = settings.max_batch or default_max_batch(embedder.device)
        self._min_batch = min(settings.min_batch_after_oom, self.max_batch)
        self._cap = self.max_batch
        self._successes_at_cap = 0
        self._cap_lock = threading.Lock()
        self.batcher: MicroBatcher[tuple[Modality, int], EmbedItem, Result] = MicroBatcher(
            self._launch,
            self._collect,
            group_of=lambda item: item.group,
            max_batch=lambda: self._cap,
            max_wait_s=settings.max_wait_ms / 1000,
            name="gpu",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> GpuRunner:
        """Load the configured model. Raises `CheckpointError` saying what is wrong with which
        file and how to fix it."""
        try:
            embedder = Embedder.from_settings(settings.model)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} Fix: {checkpoint_fix(exc, settings.model)}", reason=exc.reason) from exc
        log.info(
            "loaded %s (checkpoint %s) on %s as %s",
            embedder.model_name,
            embedder.checkpoint_sha256[:12],
            embedder.device,
            embedder.compute_dtype,
        )
        return cls(embedder, settings.gpu)

    @property
    def model_name(self) -> str:
        return self.embedder.model_name

    @property
    def checkpoint(self) -> str:
        return self.embedder.checkpoint_sha256

    @property
    def batch_cap(self) -> int:
        """The largest batch run now: `max_batch`, or less after CUDA ran out of memory."""
        return self._cap

    def embed(self, modality: Modality, array: np.ndarray, *, timeout_s: float) -> np.ndarray:
        """The unit-length float32 embedding of one item (batched with concurrent callers).

        Raises what embedding that item raised (`PermanentError` for a bad input,
        `GpuOutOfMemory` when even a batch of one does not fit), or `TimeoutError`.
        """
        result = self.batcher.submit(EmbedItem(modality, array)).result(timeout=timeout_s)
        assert isinstance(result, np.ndarray)  # per-item exceptions are raised by result()
        return result

    def close(self) -> None:
        self.batcher.close()

    # -- batch execution ---------------------------------------------------------------

    def _launch(self, key: tuple[Modality, int], items: list[EmbedItem]) -> Any:
        """Queue the forward of a batch; returns the device output (collected later) or,
        after a fallback, the per-item results."""
        try:
            output = self._forward(key[0], items)
        except torch.cuda.OutOfMemoryError:
            return self._after_oom(key, items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning("batch of %d %s failed (%s); running its items one by one", len(items), key[0], exc)
            return [self._one(key, item) for item in items]
        self._note_success(len(items))
        return output

    def _collect(self, handle: Any) -> Sequence[Result]:
        if isinstance(handle, list):
            return handle
        return list(self.embedder.finish(handle))

    def _forward(self, modality: Modality, items: list[EmbedItem]) -> torch.Tensor:
        stacked = np.stack([item.array for item in items])
        return self.embedder.forward(self.embedder.prepare(modality, stacked))

    def _one(self, key: tuple[Modality, int], item: EmbedItem) -> Result:
        try:
            return self.embedder.finish(self._forward(key[0], [item]))[0]
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            return GpuOutOfMemory(f"one {key[0]} input does not fit in GPU memory: {exc}")
        except Exception as exc:
            return exc

    def _after_oom(self, key: tuple[Modality, int], items: list[EmbedItem]) -> list[Result]:
        torch.cuda.empty_cache()
        with self._cap_lock:
            self._cap = max(self._min_batch, len(items) // 2)
            self._successes_at_cap = 0
        log.warning("CUDA out of memory on a batch of %d %s; batch cap now %d", len(items), key[0], self._cap)
        if len(items) == 1:
            return [self._one(key, items[0])]
        half = len(items) // 2
        results: list[Result] = []
        for part in (items[:half], items[half:]):
            handle = self._launch(key, part)
            results.extend(self._collect(handle))
        return results

    def _note_success(self, size: int) -> None:
        with self._cap_lock:
            if self._cap >= self.max_batch or size < self._cap:
                return
            self._successes_at_cap += 1
            if self._successes_at_cap >= GROW_AFTER_BATCHES:
                self._cap = min(self.max_batch, self._cap * 2)
                self._successes_at_cap = 0
                log.info("batch cap grows back to %d", self._cap)
