"""Sizes of an ImageBind model: the official `huge` one and a `tiny` one for tests.

The names of the modalities here are the checkpoint's (``vision``, ``text``, ``audio``): every
state_dict key starts with ``modality_<part>.<modality>.``. The pipeline speaks of ``image``
rather than ``vision``; `shared.imagebind.embed` translates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelModality = Literal["vision", "text", "audio"]
MODEL_MODALITIES: tuple[ModelModality, ...] = ("vision", "text", "audio")
# Every modality of the official checkpoint; keys of those we never build are skipped on load.
CHECKPOINT_MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
CHECKPOINT_PARTS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


@dataclass(frozen=True)
class TrunkConfig:
    """One modality's transformer: width, depth and attention heads."""

    embed_dim: int
    num_blocks: int
    num_heads: int

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


@dataclass(frozen=True)
class ImageBindConfig:
    """Everything that decides the shapes of the vision, text and audio parts.

    The fixed input geometry (224x224 images in 14x14 patches over 2 repeated frames, 77 text
    tokens, 128x204 fbank clips in 16x16 patches with stride 10) is the official one and is
    what the checkpoint's positional embeddings were trained for.
    """

    name: str
    vision: TrunkConfig
    text: TrunkConfig
    audio: TrunkConfig
    out_dim: int
    # vision stem: a Conv3d over an image repeated to `video_frames` frames
    image_size: int = 224
    video_frames: int = 2
    vision_patch: int = 14
    # text
    context_length: int = 77
    vocab_size: int = 49408
    # audio stem: Conv2d over (1, mel_bins, frames) with overlapping patches
    audio_mel_bins: int = 128
    audio_frames: int = 204
    audio_patch: int = 16
    audio_stride: int = 10
    # postprocessor constants: text's scale is learned (capped), audio's is a fixed buffer
    text_max_logit_scale: float = 100.0
    audio_logit_scale: float = 20.0

    def trunk(self, modality: ModelModality) -> TrunkConfig:
        trunk: TrunkConfig = getattr(self, modality)
        return trunk

    @property
    def vision_tokens(self) -> int:
        """CLS + one token per patch (257 for 224/14)."""
        return 1 + (self.image_size // self.vision_patch) ** 2

    @property
    def audio_grid(self) -> tuple[int, int]:
        """Patch rows x columns of the strided audio conv (12 x 19 for 128x204)."""
        rows = (self.audio_mel_bins - self.audio_patch) // self.audio_stride + 1
        cols = (self.audio_frames - self.audio_patch) // self.audio_stride + 1
        return rows, cols

    @property
    def audio_tokens(self) -> int:
        """CLS + one token per patch (229 for the official geometry)."""
        rows, cols = self.audio_grid
        return 1 + rows * cols


HUGE = ImageBindConfig(
    name="imagebind-huge",
    vision=TrunkConfig(embed_dim=1280, num_blocks=32, num_heads=16),
    text=TrunkConfig(embed_dim=1024, num_blocks=24, num_heads=16),
    audio=TrunkConfig(embed_dim=768, num_blocks=12, num_heads=12),
    out_dim=1024,
)

# The tiny configuration of REFERENCE.md, which the reference can build too (golden fixtures).
TINY = ImageBindConfig(
    name="imagebind-tiny",
    vision=TrunkConfig(embed_dim=64, num_blocks=2, num_heads=2),
    text=TrunkConfig(embed_dim=64, num_blocks=2, num_heads=2),
    audio=TrunkConfig(embed_dim=64, num_blocks=2, num_heads=2),
    out_dim=32,
)

CONFIGS: dict[str, ImageBindConfig] = {"huge": HUGE, "tiny": TINY}


def reference_kwargs(config: ImageBindConfig) -> dict[str, int]:
    """Keyword arguments of the reference's ``ImageBindModel(...)`` that build `config`
    (depth, thermal and IMU at REFERENCE.md's minimal sizes: we never load them)."""
    kwargs = {"out_embed_dim": config.out_dim}
    for modality, trunk in (("vision", config.vision), ("text", config.text), ("audio", config.audio)):
        kwargs |= {
            f"{modality}_embed_dim": trunk.embed_dim,
            f"{modality}_num_blocks": trunk.num_blocks,
            f"{modality}_num_heads": trunk.num_heads,
        }
    for modality in ("depth", "thermal", "imu"):
        kwargs |= {f"{modality}_embed_dim": 32, f"{modality}_num_blocks": 1, f"{modality}_num_heads": 2}
    return kwargs


def config_by_name(name: str) -> ImageBindConfig:
    """`huge` or `tiny` -> its configuration; raises KeyError naming the choices."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown ImageBind configuration {name!r}; choose one of {sorted(CONFIGS)}") from None
