"""Perception Encoder Audio-Visual (PE-AV) behind the model port, on `transformers`'
`PeAudioVideoModel` (its implementation, not a port of ours).

Heads (docs/model.md): an image is a one-frame video -> the video head; a video (the card's
`video_frames` frames, uint8 (F, 3, S, S) from the cpu stage) -> the video head; audio -> the
audio head; text -> the text-video head (``video``) or the text-audio head (``audio``). Video and
audio embeddings are one trained pair, so an image query searches audio with the same
vector; a text query needs one vector per target (`heads_for_query`).

`transformers` 5.23's `PeAudioVideoModel.get_video_embeds` / `get_text_audio_embeds` call
methods its sub-models do not have, so `forward` calls the towers and heads exactly as
`PeAudioVideoModel.forward` does.

Loading: `from_pretrained` of the resolved directory (`shared.models.perception_files`):
safetensors are memory-mapped and converted to the requested dtype, then moved to the device
once (``device_map``, which would write straight to the GPU, needs `accelerate`, which omnibind
does not install); the joint audio+video encoder, which omnibind never runs, is dropped.
`tiny_random_model_dir` saves a seeded random tiny PE-AV with ``save_pretrained`` (the real
format, the real loading code) plus the byte-level tokenizer of `perception_files`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shared.config import ModelSettings
from shared.errors import CheckpointError, PermanentError
from shared.events import Modality
from shared.imagebind.embed import EMBEDDABLE, resolve_device, resolve_dtype
from shared.imagebind.inputs import bad_input, to_cpu_tensor
from shared.models.catalog import card_for
from shared.models.perception_files import TINY_SEED, locate_model_dir, tiny_dir, tiny_tokenizer, weight_files

log = logging.getLogger(__name__)

VIDEO = "video"
AUDIO = "audio"
IMAGE_MEAN = 0.5  # PE-Core's normalisation (timm pretrained_cfg: mean = std = 0.5 per channel)
IMAGE_STD = 0.5
AUDIO_BUCKET_S = 1.0  # audio batches group waves of the same length (s, rounded up)


def tiny_config() -> Any:
    """A PE-AV of the real architecture at toy sizes (~0.3 M parameters): ModernBERT text
    (vocab 261 = the tiny byte tokenizer), a 1-block PE-Core video tower on 32 px, DAC front end."""
    from transformers import PeAudioVideoConfig

    encoder = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    encoder["head_dim"] = 16
    return PeAudioVideoConfig(
        text_config={
            "model_type": "modernbert",
            "vocab_size": 261,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "cls_token_id": 1,
            "sep_token_id": 2,
            "max_position_embeddings": 64,
            "global_attn_every_n_layers": 1,
            "local_attention": 16,
        },
        audio_video_config={
            **encoder,
            "audio_config": {
                **encoder,
                "dac_config": {
                    "encoder_hidden_size": 4,
                    "downsampling_ratios": [2, 8, 10, 12],
                    "codebook_dim": 8,
                    "hidden_size": 16,
                },
            },
            "video_config": {
                **encoder,
                "vision_config": {
                    "architecture": "vit_pe_core_tiny_patch16_384",
                    "num_classes": 16,
                    "do_pooling": True,
                    "global_pool": "map",
                    "model_args": {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2},
                },
            },
        },
    )


def tiny_random_model_dir(cache_dir: Path, seed: int = TINY_SEED) -> Path:
    """The seeded random tiny PE-AV directory in `cache_dir`, created on first use with
    ``save_pretrained`` (config.json + model.safetensors) and the tiny tokenizer, in a
    temporary directory renamed into place: racing processes all end with one complete copy."""
    dest = tiny_dir(cache_dir, seed)
    if weight_files(dest):
        return dest
    from transformers import PeAudioVideoModel

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = PeAudioVideoModel(tiny_config())
        model.save_pretrained(staging)
        tiny_tokenizer(staging)
        staging.chmod(0o755)  # mkdtemp's 0700 (and 0600 files) would hide the cache from other users
        for item in staging.iterdir():
            item.chmod(0o644)
        if dest.exists():  # a cpu worker made the tokenizer first: keep its file, add the weights
            for item in staging.iterdir():
                if not (dest / item.name).exists():
                    os.replace(item, dest / item.name)
        else:
            os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.warning("created %s: a RANDOM tiny PE-AV for offline smoke runs, not a trained model", dest)
    return dest


def _model_class() -> Any:
    """`PeAudioVideoModel` with its tied-weight patterns taught that timm's rotary ``bands``
    is a buffer: transformers 5.23 excludes ``rope.pos_embed`` from the video-tower tying but
    not ``rope.bands`` (a buffer in timm >= 1.0.20), and `from_pretrained` then fails with
    "`bands` is not an nn.Parameter" for every PE-AV checkpoint. Same model, same weights."""
    from transformers import PeAudioVideoModel

    _TIED: dict[str, str] = PeAudioVideoModel._tied_weights_keys

    def _rope_buffers(pattern: str) -> str:
        return pattern.replace(r".*\.rope\.pos_embed", r".*\.rope\.(?:pos_embed|bands)")

    class PeAudioVideoModelForOmnibind(PeAudioVideoModel):  # type: ignore[misc]
        _tied_weights_keys = {_rope_buffers(key): _rope_buffers(value) for key, value in _TIED.items()}  # noqa: RUF012

    return PeAudioVideoModelForOmnibind


def load_model(path: Path, *, device: torch.device, dtype: torch.dtype) -> Any:
    """`PeAudioVideoModel.from_pretrained(path)` on `device` in `dtype`, in eval mode, without
    the joint audio+video encoder. Raises `CheckpointError` when the directory does not load."""
    from safetensors import SafetensorError

    try:
        # Without `accelerate`, transformers refuses device_map: load (memory-mapped safetensors)
        # on the CPU in `dtype`, then move once.
        model, info = _model_class().from_pretrained(path, dtype=dtype, output_loading_info=True)
    except SafetensorError as exc:
        raise CheckpointError(
            f"cannot read the weights in {path} (truncated or corrupt safetensors): {exc}",
            reason="checkpoint_corrupt",
        ) from exc
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"cannot load the PE-AV model in {path}: {exc}. Is OMNIBIND_MODEL__NAME right for this directory?",
            reason="checkpoint_incompatible",
        ) from exc
    # transformers initialises missing weights at random with a warning; a model with random
    # parts would embed without error and mean nothing, so any gap is refused.
    problems = {kind: sorted(info.get(kind) or ()) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        listed = "; ".join(
            f"{len(keys)} {kind.replace('_', ' ')}: {keys[:5]}" for kind, keys in problems.items() if keys
        )
        raise CheckpointError(
            f"the weights in {path} do not fit its config ({listed}). Is OMNIBIND_MODEL__NAME right?",
            reason="checkpoint_incompatible",
        )
    model.audio_video_encoder = None  # never run (uploads are one modality each); frees its weights
    return model.to(device).eval()


def vision_input_size(model: Any) -> int:
    """The side of the square frames the video tower was built for (timm's patch embed)."""
    tower = model.video_model.video_encoder.embedder.vision_model
    size = tower.timm_model.patch_embed.img_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@dataclass(frozen=True)
class PePrepared:
    modality: Modality
    head: str
    tensor: torch.Tensor
    mask: torch.Tensor | None = None


class PerceptionBackend:
    """PE-AV inference on the loaded model (the module docstring says which head does what)."""

    modalities: frozenset[Modality] = frozenset(EMBEDDABLE)

    def __init__(
        self, model: Any, *, model_name: str, checkpoint_sha256: str, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = device
        self.compute_dtype = dtype
        self.image_size = vision_input_size(model)
        self.pad_id = int(model.config.text_config.pad_token_id or 0)
        self.vocab_size = int(model.config.text_config.vocab_size)

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> PerceptionBackend:
        """Resolve (create, for pe-av-tiny; download once, for the hub models) and load.
        Raises `CheckpointError` or `ConfigError` (unusable device)."""
        card = card_for(settings.name)
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if card.random and settings.checkpoint is None:
            tiny_random_model_dir(settings.cache_dir)
        resolved = locate_model_dir(settings)
        model = load_model(resolved.path, device=device, dtype=dtype)
        return cls(model, model_name=resolved.model_name, checkpoint_sha256=resolved.sha256, device=device, dtype=dtype)

    @property
    def out_dim(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    # -- what differs from ImageBind ------------------------------------------------------

    def head_for_upload(self, modality: Modality) -> str:
        return AUDIO if modality is Modality.AUDIO else VIDEO

    def heads_for_query(self, modality: Modality) -> Mapping[Modality, str]:
        if modality is Modality.TEXT:
            return {Modality.IMAGE: VIDEO, Modality.TEXT: VIDEO, Modality.AUDIO: AUDIO, Modality.VIDEO: VIDEO}
        return dict.fromkeys(EMBEDDABLE, self.head_for_upload(modality))

    def batch_group(self, modality: Modality, head: str, array: np.ndarray) -> int:
        if modality is Modality.AUDIO:
            return int(array.shape[-1])  # waves are stacked: only equal lengths share a forward
        if modality is Modality.VIDEO:
            return int(array.shape[0])  # frames per video (one card: always the same)
        return 0

    # -- the three stages ------------------------------------------------------------------

    def prepare(self, modality: Modality, inputs: Any, head: str = "") -> PePrepared:
        head = head or self.head_for_upload(modality)
        if modality is Modality.IMAGE:
            images = to_cpu_tensor(inputs, "images")
            if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
                raise bad_input(f"images must be uint8 (B, 3, S, S), got {images.dtype} {tuple(images.shape)}")
            frames = self._frames(images).unsqueeze(1)  # (B, 1 frame, 3, S, S)
            return PePrepared(modality, VIDEO, frames)
        if modality is Modality.VIDEO:
            videos = to_cpu_tensor(inputs, "videos")
            if videos.ndim != 5 or videos.shape[2] != 3 or videos.dtype != torch.uint8 or videos.shape[1] == 0:
                raise bad_input(f"videos must be uint8 (B, F, 3, S, S), got {videos.dtype} {tuple(videos.shape)}")
            batch, count = int(videos.shape[0]), int(videos.shape[1])
            frames = self._frames(videos.flatten(0, 1))  # (B * F, 3, S, S)
            return PePrepared(modality, VIDEO, frames.unflatten(0, (batch, count)))  # (B, F, 3, S, S)
        if modality is Modality.TEXT:
            ids = to_cpu_tensor(inputs, "text tokens")
            if ids.ndim != 2 or ids.is_floating_point() or int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
                raise bad_input(f"text tokens must be integer ids in [0, {self.vocab_size}) of shape (B, n)")
            ids = ids.to(torch.long).to(self.device)
            return PePrepared(modality, head, ids, (ids != self.pad_id).to(torch.long))
        if modality is Modality.AUDIO:
            wave = to_cpu_tensor(inputs, "audio")
            if wave.ndim != 2 or not wave.is_floating_point() or wave.shape[-1] == 0:
                raise bad_input(f"audio must be float waves (B, samples), got {wave.dtype} {tuple(wave.shape)}")
            return PePrepared(modality, AUDIO, wave.to(self.device).to(self.compute_dtype).unsqueeze(1))
        raise PermanentError(f"cannot embed modality {modality!r}", reason="invalid_model_input")

    def _frames(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, s, s) -> normalised (N, 3, S, S) at the video tower's input size S."""
        pixels = images.to(self.device).to(torch.float32) / 255.0
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(
                pixels, size=(self.image_size, self.image_size), mode="bicubic", antialias=True
            ).clamp_(0, 1)
        return ((pixels - IMAGE_MEAN) / IMAGE_STD).to(self.compute_dtype)

    def forward(self, prepared: PePrepared) -> torch.Tensor:
        model = self.model
        with torch.inference_mode():
            if prepared.modality in (Modality.IMAGE, Modality.VIDEO):
                video = model.video_model.video_encoder(pixel_values_videos=prepared.tensor, return_dict=True)
                return model.video_model.video_head(video.pooler_output)
            if prepared.modality is Modality.AUDIO:
                audio = model.audio_model.audio_encoder(input_values=prepared.tensor, return_dict=True)
                return model.audio_model.audio_head(audio.pooler_output)
            text = model.text_model(
                input_ids=prepared.tensor, attention_mask=prepared.mask, output_hidden_states=True, return_dict=True
            )
            cls_token = text.hidden_states[-1][:, 0]
            if prepared.head == AUDIO:
                return model.audio_model.text_audio_head(cls_token)
            return model.video_model.text_video_head(cls_token)

    def finish(self, output: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return F.normalize(output.to(torch.float32), dim=-1).cpu().numpy()
