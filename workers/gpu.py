"""The GPU worker's runtime: one model per process, micro-batched across embed tasks.

The model is the configured family's backend (`shared.models.loader.load_backend`: ImageBind
or PE-AV behind one port). Items are grouped by modality, output head and the backend's
`batch_group` (ImageBind: texts by their EOT position rounded up to 8, since a batch is cut
after its longest text; PE-AV: audio by length) so each forward runs on same-shaped inputs
and a long audio never holds images behind it. A video weighs its 15 clips against the batch
cap (`EmbedItem.cost`): a batch holds at most cap / 15 videos (at least one), and due groups
take turns, so images queued behind a burst of videos wait for one capped forward at a time.
A batch that hits CUDA out-of-memory is split in halves and the batch cap shrinks; after a
run of successes the cap grows back. A batch that fails for another reason is re-run item
by item so one bad input fails alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.config import GpuSettings, ModelSettings, Settings
from shared.errors import CheckpointError, TransientError
from shared.events import Modality
from shared.imagebind.embed import Embedder
from shared.models.imagebind import ImageBindBackend
from shared.models.loader import load_backend
from shared.models.port import DEFAULT_HEAD, EmbeddingBackend
from shared.models.preprocessing import ImageBindPreprocessor, Preprocessor, preprocessor_for
from shared.moderation.prompt_embeddings import PromptEmbeddings, PromptRequest
from workers.batcher import MicroBatcher

log = logging.getLogger(__name__)

GROW_AFTER_BATCHES = 50


class GpuOutOfMemory(TransientError):
    reason = "gpu_out_of_memory"


@dataclass(frozen=True, slots=True)
class EmbedItem:
    modality: Modality
    array: np.ndarray
    head: str = DEFAULT_HEAD  # the backend's output head ("" = the upload's own)

    @property
    def cost(self) -> int:
        """What the item weighs against the batch cap: a video is 15 two-frame clips through
        the vision trunk, as much as 15 images, so a batch of videos is capped by its clips
        and a burst of videos cannot make one forward (and the images queued behind it)
        take 15 times as long."""
        return int(self.array.shape[0]) if self.modality is Modality.VIDEO else 1


Group = tuple[Modality, str, int]


Result = np.ndarray | BaseException


def default_max_batch(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 8


def checkpoint_fix(exc: CheckpointError, settings: ModelSettings) -> str:
    """What to change when the checkpoint of `settings` cannot be loaded (`exc`)."""
    default = (
        "the seeded random tiny checkpoint" if settings.name in ("tiny", "pe-av-tiny") else "the official download"
    )
    if exc.reason == "checkpoint_incompatible":
        return (
            f"set OMNIBIND_MODEL__NAME to the model this file holds, or point OMNIBIND_MODEL__CHECKPOINT "
            f"at a {settings.name} checkpoint (docs/model.md)."
        )
    if settings.checkpoint is not None:
        return (
            f"point OMNIBIND_MODEL__CHECKPOINT at a complete {settings.name} checkpoint "
            f"(ImageBind: a state_dict of tensors; PE-AV: a transformers directory), or unset it to use {default}."
        )
    return (
        "delete the file from the cache so that it is fetched again, or point OMNIBIND_MODEL__CHECKPOINT "
        f"at a local {settings.name} checkpoint."
    )


class GpuRunner:
    """Embeds items submitted from many task threads in shared batches."""

    def __init__(
        self, embedder: EmbeddingBackend | Embedder, settings: GpuSettings, preprocessor: Preprocessor | None = None
    ) -> None:
        self.embedder: EmbeddingBackend = ImageBindBackend(embedder) if isinstance(embedder, Embedder) else embedder
        # The family's cpu-side preprocessing, for inputs made here (moderation prompts).
        self.preprocessor: Preprocessor = preprocessor or ImageBindPreprocessor()
        self.max_batch = settings.max_batch or default_max_batch(embedder.device)
        self._min_batch = min(settings.min_batch_after_oom, self.max_batch)
        self._cap = self.max_batch
        self._successes_at_cap = 0
        self._cap_lock = threading.Lock()
        self.batcher: MicroBatcher[Group, EmbedItem, Result] = MicroBatcher(
            self._launch,
            self._collect,
            group_of=self.group_of,
            cost_of=lambda item: item.cost,
            max_batch=lambda: self._cap,
            max_wait_s=settings.max_wait_ms / 1000,
            name="gpu",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> GpuRunner:
        """Load the configured model. Raises `CheckpointError` saying what is wrong with which
        file and how to fix it."""
        try:
            embedder = load_backend(settings.model)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} Fix: {checkpoint_fix(exc, settings.model)}", reason=exc.reason) from exc
        log.info(
            "loaded %s (checkpoint %s) on %s as %s",
            embedder.model_name,
            embedder.checkpoint_sha256[:12],
            embedder.device,
            embedder.compute_dtype,
        )
        return cls(embedder, settings.gpu, preprocessor_for(settings.model))

    @property
    def model_name(self) -> str:
        return self.embedder.model_name

    @property
    def checkpoint(self) -> str:
        return self.embedder.checkpoint_sha256

    def group_of(self, item: EmbedItem) -> Group:
        """Items of one group are stacked into one forward (the backend says which fit)."""
        head = item.head or self.embedder.head_for_upload(item.modality)
        return item.modality, head, self.embedder.batch_group(item.modality, head, item.array)

    @property
    def batch_cap(self) -> int:
        """The largest batch run now: `max_batch`, or less after CUDA ran out of memory."""
        return self._cap

    def embed(
        self,
        modality: Modality,
        array: np.ndarray,
        *,
        timeout_s: float,
        head: str = DEFAULT_HEAD,
        urgent: bool = False,
    ) -> np.ndarray:
        """The unit-length float32 embedding of one item (batched with concurrent callers),
        by `head` (default: the head the backend embeds uploads of `modality` with);
        `urgent`: its batch launches without waiting for company (`MicroBatcher.submit`).

        Raises what embedding that item raised (`PermanentError` for a bad input,
        `GpuOutOfMemory` when even a batch of one does not fit), or `TimeoutError`.
        """
        return self.wait(self.submit(modality, array, head=head, urgent=urgent), timeout_s=timeout_s)

    def submit(
        self, modality: Modality, array: np.ndarray, *, head: str = DEFAULT_HEAD, urgent: bool = False
    ) -> Future[Result]:
        """Queue one item; `wait` for its embedding."""
        return self.batcher.submit(EmbedItem(modality, array, head), urgent=urgent)

    @staticmethod
    def wait(future: Future[Result], *, timeout_s: float) -> np.ndarray:
        """The embedding of a `submit`ted item; raises what embedding it raised, or `TimeoutError`."""
        result = future.result(timeout=timeout_s)
        assert isinstance(result, np.ndarray)  # per-item exceptions are raised by result()
        return result

    def embed_texts(self, texts: Sequence[str], *, timeout_s: float) -> np.ndarray:
        """Unit embeddings (len(texts), dim) of texts made here (a policy's prompts, a
        transcript's passages): tokenized by the model's own preprocessing, then batched with
        everything else like text uploads. Raises `TimeoutError` as `embed` does."""
        futures = [self.submit(Modality.TEXT, self.preprocessor.text(text)) for text in texts]
        return np.stack([np.asarray(self.wait(future, timeout_s=timeout_s), dtype=np.float32) for future in futures])

    def embed_prompts(self, request: PromptRequest, *, timeout_s: float) -> PromptEmbeddings:
        """The embeddings of a moderation policy's prompts by this model (cached in Redis by
        the caller: `shared.moderation.prompts.PromptStore`)."""
        return PromptEmbeddings(
            policy_version=request.policy_version,
            checkpoint=self.checkpoint,
            model=self.model_name,
            prompts=request.prompts,
            matrix=self.embed_texts(request.prompts, timeout_s=timeout_s),
        )

    def close(self) -> None:
        self.batcher.close()

    # -- batch execution ---------------------------------------------------------------

    def _launch(self, key: Group, items: list[EmbedItem]) -> Any:
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
        head = items[0].head or self.embedder.head_for_upload(modality)
        output: torch.Tensor = self.embedder.forward(self.embedder.prepare(modality, stacked, head))
        return output

    def _one(self, key: Group, item: EmbedItem) -> Result:
        try:
            return self.embedder.finish(self._forward(key[0], [item]))[0]
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            return GpuOutOfMemory(f"one {key[0]} input does not fit in GPU memory: {exc}")
        except Exception as exc:
            return exc

    def _after_oom(self, key: Group, items: list[EmbedItem]) -> list[Result]:
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
