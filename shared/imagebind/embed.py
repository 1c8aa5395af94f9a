"""The inference API: model-ready arrays in, L2-normalised float32 vectors out.

`Embedder` runs in three separable stages so a GPU micro-batcher can overlap them:

- `prepare` (CPU -> device): validates the arrays, cuts text after its longest EOT, copies to
  the device (pinned memory + non_blocking on CUDA) and normalises uint8 images there;
- `forward` (device, under `torch.inference_mode()` and, for bf16/fp16, `torch.autocast`):
  returns what the reference model returns (vision unit-norm, text x learned scale, audio x20,
  audio clips averaged per item);
- `finish` (device -> CPU): L2-normalises and returns float32 numpy (B, out_dim).

`embed(batch)` chains them for a mapping modality -> inputs.

Input contract (what the preprocessing stage sends):

========  ==========================================================================
image     uint8 (B, 3, 224, 224) RGB pixels (normalised on the device), or float32
          (B, 3, 224, 224) already CLIP-normalised
text      int64/int32 token ids (B, 77) from the CLIP BPE tokenizer (SOT 49406, EOT 49407
          = the largest id, zero padding); fewer than 77 columns are accepted too
audio     float16/float32 fbank clips (B, clips, 1, 128, 204), or a sequence of per-item
          arrays (clips_i, 1, 128, 204) with varying clip counts ("full file" mode: all
          clips go through one forward, then each item's clips are averaged)
video     uint16 fixed-point clips (B, 15, 3, 2, 224, 224) from `shared.imagebind.video`
          (normalised on the device), or float32 already CLIP-normalised, or a sequence
          of per-item (clips_i, 3, 2, 224, 224); each clip through the vision trunk, the
          unit-norm clip embeddings averaged per item (as the reference)
========  ==========================================================================

Bad inputs raise `PermanentError` with reason ``invalid_model_input``.

Precision: fp32 on CPU. On CUDA the default is bf16: Linear weights stored in bf16 and the
forward under bf16 autocast, with LayerNorms, embeddings, convs and the residual stream in
fp32 -- the same numbers as autocast over fp32 weights, at half the weight memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.config import ModelSettings
from shared.errors import ConfigError, PermanentError
from shared.events import Modality
from shared.imagebind.checkpoint import load_model, resolve_checkpoint
from shared.imagebind.config import ModelModality
from shared.imagebind.inputs import (
    ModelInput,
    bad_input,
    check_images,
    cut_tokens,
    flatten_clips,
    flatten_videos,
    to_cpu_tensor,
)
from shared.imagebind.model import ImageBindModel
from shared.imagebind.normalize import normalize_image, normalize_video

EMBEDDABLE: tuple[Modality, ...] = (Modality.IMAGE, Modality.TEXT, Modality.AUDIO, Modality.VIDEO)
_MODEL_MODALITY: dict[Modality, ModelModality] = {
    Modality.IMAGE: "vision",
    Modality.TEXT: "text",
    Modality.AUDIO: "audio",
    Modality.VIDEO: "vision",  # the vision trunk on two-frame clips
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Prepared:
    """One modality's batch on the device, ready for `Embedder.forward`.

    `clip_counts` (audio, video) says how many consecutive clips of `tensor` belong to each item.
    """

    modality: Modality
    tensor: torch.Tensor
    clip_counts: tuple[int, ...] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.clip_counts) if self.clip_counts is not None else int(self.tensor.shape[0])


def as_modality(value: Modality | str) -> Modality:
    """``"image"``/``Modality.IMAGE`` (and text, audio) -> `Modality`; anything else is refused."""
    try:
        modality = Modality(value)
    except ValueError:
        modality = Modality.AUTO
    if modality not in EMBEDDABLE:
        raise bad_input(f"cannot embed modality {value!r}; choose one of {[m.value for m in EMBEDDABLE]}")
    return modality


def resolve_device(name: str) -> torch.device:
    """``auto`` -> first CUDA device if any, else CPU; raises `ConfigError` for unusable names."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"OMNIBIND_MODEL__DEVICE={name!r} is not a torch device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"OMNIBIND_MODEL__DEVICE={name!r} but CUDA is not available here")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; otherwise the named dtype."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


class Embedder:
    """ImageBind inference for the loaded modalities (see the module docstring for the contract).

    Attributes: `model_name` (``imagebind-huge``, or ``imagebind-tiny-random`` for the random
    test model), `out_dim` (1024 for huge), `checkpoint_sha256` (the fingerprint stored next
    to every vector), `modalities`, `device`, `compute_dtype`.
    """

    def __init__(
        self,
        model: ImageBindModel,
        *,
        model_name: str,
        checkpoint_sha256: str,
        device: torch.device,
        compute_dtype: torch.dtype = torch.float32,
        pin_memory: bool | None = None,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = device
        self.compute_dtype = compute_dtype
        self.pin_memory = device.type == "cuda" if pin_memory is None else pin_memory
        self.modalities: frozenset[Modality] = frozenset(
            m for m in EMBEDDABLE if _MODEL_MODALITY[m] in model.modalities
        )

    @classmethod
    def from_settings(cls, settings: ModelSettings, modalities: Iterable[Modality | str] = EMBEDDABLE) -> Embedder:
        """Resolve the checkpoint (local path, cache/download, or the tiny random one) and load
        only `modalities` onto the configured device and dtype.

        Raises `CheckpointError` (missing/corrupt/incompatible checkpoint, failed download) or
        `ConfigError` (unusable device).
        """
        wanted = [as_modality(m) for m in modalities]
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        resolved = resolve_checkpoint(settings)
        model = load_model(
            resolved.path,
            resolved.config,
            [_MODEL_MODALITY[m] for m in wanted],
            device=device,
            matmul_dtype=dtype,
        )
        return cls(
            model, model_name=resolved.model_name, checkpoint_sha256=resolved.sha256, device=device, compute_dtype=dtype
        )

    @property
    def out_dim(self) -> int:
        return self.model.config.out_dim

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            if self.pin_memory and x.device.type == "cpu" and not x.is_pinned():
                x = x.pin_memory()
            return x.to(self.device, non_blocking=True)
        return x.to(self.device)

    def _loaded(self, modality: Modality | str) -> Modality:
        parsed = as_modality(modality)
        if parsed not in self.modalities:
            loaded = sorted(m.value for m in self.modalities)
            raise PermanentError(
                f"this embedder has no {parsed.value} encoder loaded (loaded: {loaded})",
                reason="modality_not_loaded",
            )
        return parsed

    def prepare(self, modality: Modality | str, inputs: ModelInput) -> Prepared:
        """Validate CPU inputs of one modality and put them on the device, model-ready."""
        parsed = self._loaded(modality)
        config = self.model.config
        if parsed is Modality.IMAGE:
            images = check_images(to_cpu_tensor(inputs, "images"), config.image_size)
            on_device = self._to_device(images)
            if on_device.dtype == torch.uint8:
                on_device = normalize_image(on_device)  # (B, 3, S, S) float32
            return Prepared(parsed, on_device)
        if parsed is Modality.TEXT:
            tokens = cut_tokens(to_cpu_tensor(inputs, "text tokens"), config.context_length, config.vocab_size)
            return Prepared(parsed, self._to_device(tokens))
        if parsed is Modality.VIDEO:
            video_shape = (3, config.video_frames, config.image_size, config.image_size)
            clips, counts = flatten_videos(inputs, video_shape)
            if clips.dtype == torch.uint16:
                # Copied as int16 bits (uint16 has gaps in torch's CUDA kernels), normalised there.
                on_device = normalize_video(self._to_device(clips.view(torch.int16)))  # (N, 3, T, S, S) float32
            else:
                on_device = self._to_device(clips)
            return Prepared(parsed, on_device, counts)
        clip_shape = (1, config.audio_mel_bins, config.audio_frames)
        clips, counts = flatten_clips(inputs, clip_shape)
        return Prepared(parsed, self._to_device(clips).to(torch.float32), counts)

    def forward(self, prepared: Prepared) -> torch.Tensor:
        """Run the model on a prepared batch -> (B, out_dim) on the device, as the reference
        returns it (not yet unit-norm for text and audio)."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.compute_dtype)
            if self.compute_dtype != torch.float32
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            if prepared.modality is Modality.IMAGE:
                return self.model.embed_vision(prepared.tensor)
            if prepared.modality is Modality.TEXT:
                return self.model.embed_text(prepared.tensor)
            if prepared.modality is Modality.VIDEO:
                return self.model.embed_video(prepared.tensor, prepared.clip_counts)
            return self.model.embed_audio(prepared.tensor, prepared.clip_counts)

    def finish(self, output: torch.Tensor) -> np.ndarray:
        """(B, out_dim) model output -> float32 numpy with unit L2 norm per row."""
        with torch.inference_mode():
            unit = F.normalize(output.to(torch.float32), dim=-1)
            return unit.cpu().numpy()

    def embed(self, batch: Mapping[Modality | str, ModelInput]) -> dict[Modality, np.ndarray]:
        """{modality: inputs} (any mix of image, text, audio) -> {modality: (B, out_dim) float32}."""
        return {
            prepared.modality: self.finish(self.forward(prepared))
            for prepared in (self.prepare(modality, inputs) for modality, inputs in batch.items())
        }
