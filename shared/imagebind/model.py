"""ImageBind's vision, text and audio encoders in plain PyTorch, checkpoint-compatible.

`ImageBindModel` holds, per requested modality, the four parts the official checkpoint
stores: ``modality_preprocessors`` (patch/token embedding, CLS, positions),
``modality_trunks`` (transformer), ``modality_heads`` (final LayerNorm, pooling, projection)
and ``modality_postprocessors`` (L2-normalise, then scale). Its `state_dict()` has exactly the
official keys and shapes of those modalities, and its outputs equal the reference's (golden
tests, fp32 max abs diff <= 1e-5). Only the modalities asked for are built, so a worker that
embeds images never holds the other trunks.

Where ours differs from Meta's code without changing results:
- a still image goes through a Conv2d whose kernel is the official Conv3d kernel summed over
  its 2 time steps (the reference repeats the image into 2 identical frames first);
- attention is `F.scaled_dot_product_attention` (text with `is_causal`, so a batch cut right
  after its longest EOT token gives the same result as the full 77 tokens);
- heads pick the pooled token before their LayerNorm (LayerNorm is per token).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from shared.imagebind.config import MODEL_MODALITIES, ImageBindConfig, ModelModality
from shared.imagebind.layers import BLOCK_LN_EPS, Trunk

TEXT_LOGIT_SCALE_INIT = 1 / 0.07  # CLIP's initial temperature; the checkpoint holds the learned one


class VisionStem(nn.Module):
    """Patch embedding of still images with the official Conv3d weight (D, 3, T, p, p).

    ``proj`` is a Sequential so the weight keeps its key ``rgbt_stem.proj.1.weight``; index 0
    stood for the reference's "repeat the image T times" step, which the summed kernel replaces.
    """

    def __init__(self, embed_dim: int, frames: int, patch: int) -> None:
        super().__init__()
        kernel = (frames, patch, patch)
        self.patch = patch
        self.proj = nn.Sequential(nn.Identity(), nn.Conv3d(3, embed_dim, kernel, stride=kernel, bias=False))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images, or (B, 3, T, H, W) video clips of T frames (the
        kernel's time span) -> (B, H/p * W/p, D) patch tokens."""
        conv3d = cast(nn.Conv3d, self.proj[1])
        if images.ndim == 5:  # a clip of real frames: the official Conv3d as it is
            x = conv3d(images)  # (B, D, 1, H/p, W/p)
            return x.flatten(2).transpose(1, 2)  # (B, N, D)
        # T identical frames through a (T, p, p) kernel == one frame through the kernel summed over T.
        kernel = conv3d.weight.sum(dim=2)  # (D, 3, p, p)
        x = F.conv2d(images, kernel, stride=self.patch)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class AudioStem(nn.Module):
    """Overlapping-patch Conv2d over one fbank clip, then LayerNorm (torch's default eps 1e-5)."""

    def __init__(self, embed_dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch, stride=stride, bias=False)
        self.norm_layer = nn.LayerNorm(embed_dim)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 1, mel, frames) -> (N, rows * cols, D)."""
        x = self.proj(clips)  # (N, D, rows, cols)
        x = x.flatten(2).transpose(1, 2)  # (N, rows*cols, D)
        return self.norm_layer(x)  # type: ignore[no-any-return]


class PositionalEmbedding(nn.Module):
    """Holds a learned (1, tokens, D) table under the reference key ``pos_embed``."""

    def __init__(self, num_tokens: int, embed_dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, embed_dim))


class PatchPreprocessor(nn.Module):
    """Stem tokens with a CLS token in front, plus learned positions (vision and audio)."""

    def __init__(self, stem: nn.Module, num_tokens: int, embed_dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.rgbt_stem = stem
        self.pos_embedding_helper = PositionalEmbedding(num_tokens, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (B, ...) -> (B, 1 + N, D) tokens."""
        tokens = self.rgbt_stem(x)  # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        tokens = torch.cat([cls, tokens], dim=1)  # (B, 1+N, D)
        return tokens + self.pos_embedding_helper.pos_embed


def causal_mask(length: int) -> torch.Tensor:
    """The reference's additive causal mask (0 on and below the diagonal, -inf above)."""
    return torch.full((length, length), float("-inf")).triu_(1)


class TextPreprocessor(nn.Module):
    """Token embedding plus learned positions for up to `context_length` tokens.

    ``mask`` is kept only because the official checkpoint stores it (a 77x77 causal mask);
    attention uses SDPA's `is_causal` instead, which also fits shorter, EOT-cut batches.
    """

    def __init__(self, vocab_size: int, context_length: int, embed_dim: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.empty(1, context_length, embed_dim))
        self.register_buffer("mask", causal_mask(context_length))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids, L <= context length -> (B, L, D)."""
        length = tokens.shape[1]
        return self.token_embedding(tokens) + self.pos_embed[:, :length]  # type: ignore[no-any-return]


class TokenHead(nn.Sequential):
    """LayerNorm (``0``) and bias-free projection (``2``) of the CLS token (vision, audio).

    Index 1 was the reference's "select token 0"; selecting before the per-token LayerNorm
    gives the same numbers for 1/L of the work.
    """

    def __init__(self, embed_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.LayerNorm(embed_dim, eps=BLOCK_LN_EPS), nn.Identity(), nn.Linear(embed_dim, out_dim, bias=False)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, out_dim)."""
        return self[2](self[0](tokens[:, 0]))  # type: ignore[no-any-return]


class TextHead(nn.Module):
    """Pools the token at the EOT position, then LayerNorm + projection (key ``proj.0``/``proj.1``)."""

    def __init__(self, embed_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(embed_dim, eps=BLOCK_LN_EPS), nn.Linear(embed_dim, out_dim, bias=False))

    def forward(self, tokens: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """(B, L, D) and (B,) positions -> (B, out_dim)."""
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), eot_index]  # (B, D)
        return self.proj(pooled)  # type: ignore[no-any-return]


class L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class LogitScale(nn.Module):
    """Multiplies by exp(log_logit_scale) capped at `max_scale`.

    Text's scale is a learned parameter, audio's a fixed buffer (log 20); both are in the
    checkpoint under ``log_logit_scale`` and the loaded value is the one used.
    """

    def __init__(self, init: float, *, learnable: bool, max_scale: float = 100.0) -> None:
        super().__init__()
        self.max_scale = max_scale
        value = torch.tensor(math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.log_logit_scale.exp().clamp(max=self.max_scale)
        return scale * x


def average_clips(per_clip: torch.Tensor, clip_counts: Sequence[int]) -> torch.Tensor:
    """(sum(counts), D) clip outputs -> (len(counts), D) per-item means, as the reference
    averages its clips (after the postprocessor's scaling, without re-normalising)."""
    if len(set(clip_counts)) == 1:
        return per_clip.unflatten(0, (len(clip_counts), clip_counts[0])).mean(dim=1)  # (B, S, D) -> (B, D)
    return torch.stack([chunk.mean(dim=0) for chunk in per_clip.split(list(clip_counts))])  # (B, D)


class ImageBindModel(nn.Module):
    """The requested subset of ImageBind's vision, text and audio encoders.

    Inputs are model-ready tensors on the model's device: normalised images (B, 3, 224, 224),
    token ids (B, L <= 77) with EOT (the largest id) in each row, fbank clips (N, 1, 128, 204).
    Outputs are what the reference returns: vision L2-normalised, text normalised x learned
    scale, audio normalised x 20 (per clip; see `average_clips`).
    """

    def __init__(self, config: ImageBindConfig, modalities: Iterable[ModelModality] = MODEL_MODALITIES) -> None:
        super().__init__()
        self.config = config
        self.modalities: tuple[ModelModality, ...] = tuple(m for m in MODEL_MODALITIES if m in set(modalities))
        if not self.modalities:
            raise ValueError(f"no modality requested; choose from {MODEL_MODALITIES}")
        self.modality_preprocessors = nn.ModuleDict()
        self.modality_trunks = nn.ModuleDict()
        self.modality_heads = nn.ModuleDict()
        self.modality_postprocessors = nn.ModuleDict()
        builders = {"vision": self._add_vision, "text": self._add_text, "audio": self._add_audio}
        for modality in self.modalities:
            builders[modality]()

    def _add_vision(self, name: str = "vision") -> None:
        cfg = self.config
        dim = cfg.vision.embed_dim
        stem = VisionStem(dim, cfg.video_frames, cfg.vision_patch)
        self.modality_preprocessors[name] = PatchPreprocessor(stem, cfg.vision_tokens, dim)
        self.modality_trunks[name] = Trunk(cfg.vision, pre_norm=True, add_bias_kv=False, causal=False)
        self.modality_heads[name] = TokenHead(dim, cfg.out_dim)
        self.modality_postprocessors[name] = L2Normalize()

    def _add_text(self, name: str = "text") -> None:
        cfg = self.config
        dim = cfg.text.embed_dim
        self.modality_preprocessors[name] = TextPreprocessor(cfg.vocab_size, cfg.context_length, dim)
        self.modality_trunks[name] = Trunk(cfg.text, pre_norm=False, add_bias_kv=False, causal=True)
        self.modality_heads[name] = TextHead(dim, cfg.out_dim)
        scale = LogitScale(TEXT_LOGIT_SCALE_INIT, learnable=True, max_scale=cfg.text_max_logit_scale)
        self.modality_postprocessors[name] = nn.Sequential(L2Normalize(), scale)

    def _add_audio(self, name: str = "audio") -> None:
        cfg = self.config
        dim = cfg.audio.embed_dim
        stem = AudioStem(dim, cfg.audio_patch, cfg.audio_stride)
        self.modality_preprocessors[name] = PatchPreprocessor(stem, cfg.audio_tokens, dim)
        self.modality_trunks[name] = Trunk(cfg.audio, pre_norm=False, add_bias_kv=True, causal=False)
        self.modality_heads[name] = TokenHead(dim, cfg.out_dim)
        scale = LogitScale(cfg.audio_logit_scale, learnable=False)
        self.modality_postprocessors[name] = nn.Sequential(L2Normalize(), scale)

    def _encode(self, modality: ModelModality, x: torch.Tensor) -> torch.Tensor:
        tokens = self.modality_preprocessors[modality](x)  # (B, L, D)
        return self.modality_trunks[modality](tokens)  # type: ignore[no-any-return]

    def embed_vision(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) normalised images or (B, 3, T, 224, 224) clips -> (B, out_dim), unit norm."""
        tokens = self._encode("vision", images)
        return self.modality_postprocessors["vision"](self.modality_heads["vision"](tokens))  # type: ignore[no-any-return]

    def embed_video(self, clips: torch.Tensor, clip_counts: Sequence[int] | None = None) -> torch.Tensor:
        """(N, 3, T, 224, 224) normalised clips -> (N, out_dim) per clip (unit norm), or with
        `clip_counts` (summing to N) -> (len(clip_counts), out_dim): each item's clip
        embeddings averaged after the per-clip normalisation, without re-normalising, as the
        reference reduces its (B, 15, ...) video input."""
        per_clip = self.embed_vision(clips)
        return per_clip if clip_counts is None else average_clips(per_clip, clip_counts)

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, out_dim), norm = the learned logit scale."""
        eot_index = tokens.argmax(dim=-1)  # (B,) EOT has the largest id
        hidden = self._encode("text", tokens)
        return self.modality_postprocessors["text"](self.modality_heads["text"](hidden, eot_index))  # type: ignore[no-any-return]

    def embed_audio(self, clips: torch.Tensor, clip_counts: Sequence[int] | None = None) -> torch.Tensor:
        """(N, 1, 128, 204) clips -> (N, out_dim) per clip (norm 20), or with `clip_counts`
        (summing to N) -> (len(clip_counts), out_dim) per-item averages."""
        hidden = self._encode("audio", clips)
        per_clip = self.modality_postprocessors["audio"](self.modality_heads["audio"](hidden))
        return per_clip if clip_counts is None else average_clips(per_clip, clip_counts)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The reference's calling convention: {modality: tensor} -> {modality: output}.

        A 5-D audio input (B, S, 1, 128, 204) and a 6-D vision input (B, S, 3, T, 224, 224)
        hold S clips per item, averaged as the reference does.
        """
        outputs: dict[str, torch.Tensor] = {}
        for modality, value in inputs.items():
            if modality == "vision" and value.ndim == 6:
                batch, clips = value.shape[:2]
                outputs[modality] = self.embed_video(value.flatten(0, 1), [clips] * batch)
            elif modality == "vision":
                outputs[modality] = self.embed_vision(value)
            elif modality == "text":
                outputs[modality] = self.embed_text(value)
            elif modality == "audio" and value.ndim == 5:
                batch, clips = value.shape[:2]
                outputs[modality] = self.embed_audio(value.flatten(0, 1), [clips] * batch)
            elif modality == "audio":
                outputs[modality] = self.embed_audio(value)
            else:
                raise KeyError(f"modality {modality!r} is not loaded; loaded: {self.modalities}")
        return outputs


def build_model(
    config: ImageBindConfig,
    modalities: Iterable[ModelModality] = MODEL_MODALITIES,
    device: torch.device | str = "meta",
) -> ImageBindModel:
    """Build the architecture without spending time on initialisation.

    On the default meta device nothing is allocated: the checkpoint loader then assigns the
    loaded tensors (see `shared.imagebind.checkpoint`); elsewhere the tensors are uninitialised.
    """
    with torch.device(device):
        model = ImageBindModel(config, modalities)
    return model.eval().requires_grad_(False)


def random_state_dict(
    config: ImageBindConfig, modalities: Iterable[ModelModality] = MODEL_MODALITIES, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Seeded random weights with the model's keys and shapes (tiny offline model, benchmarks).

    LayerNorms start at identity, logit scales at their official initial values, the text
    mask is the causal mask; everything else is N(0, 0.02) so activations stay in range.
    """
    generator = torch.Generator().manual_seed(seed)
    model = build_model(config, modalities, device="meta")
    layer_norms = {name for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)}
    state: dict[str, torch.Tensor] = {}
    for key, meta in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in layer_norms:
            value = torch.ones(meta.shape) if leaf == "weight" else torch.zeros(meta.shape)
        elif leaf == "log_logit_scale":
            init = TEXT_LOGIT_SCALE_INIT if ".text." in key else config.audio_logit_scale
            value = torch.tensor(math.log(init))
        elif leaf == "mask":
            value = causal_mask(meta.shape[0])
        else:
            value = torch.randn(meta.shape, generator=generator) * 0.02
        state[key] = value.to(torch.float32)
    return state


def is_matmul_weight(module_name: str, module: nn.Module, param_name: str) -> bool:
    """Whether a parameter feeds a matrix multiply (Linear layers and the attention in-projection).

    These hold ~95% of the parameters; storing them in bf16 halves memory and is exactly what
    autocast would cast them to on every forward anyway.
    """
    if isinstance(module, nn.Linear):
        return True
    return param_name in ("in_proj_weight", "in_proj_bias") and module_name.endswith(".attn")


def place(model: ImageBindModel, device: torch.device, matmul_dtype: torch.dtype) -> ImageBindModel:
    """Move the model to `device`, storing matmul weights in `matmul_dtype`, the rest in fp32.

    Tensor by tensor, so the device never holds more than the final model plus one tensor
    (no full fp32 copy on a GPU before the bf16 cast); on CPU in fp32 nothing is copied.
    With `matmul_dtype` bf16/fp16 the forward must run under `torch.autocast` of that dtype
    (the `Embedder` does): LayerNorms, embeddings, positions, convs and scales stay fp32, so
    the numbers equal autocast over fp32 weights while the weights take half the memory.
    """
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            dtype = matmul_dtype if is_matmul_weight(module_name, module, name) else torch.float32
            param.data = param.data.to(device=device, dtype=dtype)
        for name, buffer in module.named_buffers(recurse=False):
            module.register_buffer(name, buffer.to(device=device, dtype=torch.float32))
    return model
