"""Validation and CPU-side shaping of model inputs: pure functions on arrays/tensors.

Kept free of the settings/event models (pydantic) so benchmarks can run our model in the
reference's interpreter with only torch and numpy. All raise `PermanentError` with reason
``invalid_model_input`` on bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch

from shared.errors import PermanentError

ArrayLike: TypeAlias = np.ndarray | torch.Tensor
ModelInput: TypeAlias = ArrayLike | Sequence[ArrayLike]


def bad_input(message: str) -> PermanentError:
    return PermanentError(message, reason="invalid_model_input")


def to_cpu_tensor(value: object, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        # torch.from_numpy shares memory; it warns on read-only arrays (e.g. from np.frombuffer).
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    raise bad_input(f"{what} must be a numpy array or torch tensor, got {type(value).__name__}")


def require_finite(x: torch.Tensor, what: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise bad_input(f"{what} contain NaN or infinite values")


def check_images(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Validate (B, 3, S, S) uint8 or float32 images; returns them unchanged."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, image_size, image_size) or x.shape[0] == 0:
        raise bad_input(f"images must have shape (B>=1, 3, {image_size}, {image_size}), got {tuple(x.shape)}")
    if x.dtype not in (torch.uint8, torch.float32):
        raise bad_input(f"images must be uint8 pixels or float32 normalised values, got {x.dtype}")
    require_finite(x, "images")
    return x


def cut_tokens(x: torch.Tensor, context_length: int, vocab_size: int) -> torch.Tensor:
    """Validate (B, L) token ids and cut the batch right after its longest EOT position.

    EOT is the largest id, so argmax finds it (as the reference's pooling does); attention is
    causal, so the cut changes no result and saves up to 77/(L_eot+1) of the text compute.
    Returns int64 (B, max EOT position + 1).
    """
    if x.ndim != 2 or x.shape[0] == 0 or not 1 <= x.shape[1] <= context_length:
        raise bad_input(f"text tokens must have shape (B>=1, L<={context_length}), got {tuple(x.shape)}")
    if x.dtype not in (torch.int64, torch.int32):
        raise bad_input(f"text tokens must be int64 or int32, got {x.dtype}")
    # Out-of-range ids would crash the embedding lookup (on CUDA: a device-side assert).
    if int(x.min()) < 0 or int(x.max()) >= vocab_size:
        raise bad_input(f"text token ids must lie in [0, {vocab_size}), got [{int(x.min())}, {int(x.max())}]")
    length = int(x.argmax(dim=1).max()) + 1
    return x[:, :length].to(torch.int64)


def flatten_clips(value: ModelInput, clip_shape: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, S, 1, 128, 204) or a sequence of (S_i, 1, 128, 204) -> (sum S_i, 1, 128, 204) clips
    and the per-item clip counts. Accepts float16/float32 and keeps the dtype (cast on device)."""
    if isinstance(value, np.ndarray | torch.Tensor):
        x = to_cpu_tensor(value, "audio")
        if x.ndim != 5 or tuple(x.shape[2:]) != clip_shape or x.shape[0] == 0 or x.shape[1] == 0:
            raise bad_input(
                f"audio must have shape (B>=1, clips>=1, {', '.join(map(str, clip_shape))}), got {tuple(x.shape)}"
            )
        items = list(x)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) > 0:
        items = [to_cpu_tensor(item, "audio items") for item in value]
    else:
        raise bad_input("audio must be a (B, clips, 1, 128, 204) array or a non-empty sequence of clip arrays")
    for i, item in enumerate(items):
        if item.ndim != 4 or tuple(item.shape[1:]) != clip_shape or item.shape[0] == 0:
            raise bad_input(
                f"audio item {i} must have shape (clips>=1, {', '.join(map(str, clip_shape))}), got {tuple(item.shape)}"
            )
        if item.dtype not in (torch.float16, torch.float32):
            raise bad_input(f"audio features must be float16 or float32, got {item.dtype}")
    clips = torch.cat(items) if len(items) > 1 else items[0]  # (N, 1, 128, 204)
    require_finite(clips, "audio features")
    return clips, tuple(int(item.shape[0]) for item in items)


def flatten_videos(value: ModelInput, clip_shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, S, 3, T, H, W) or a sequence of (S_i, 3, T, H, W) video clips -> (sum S_i, 3, T, H, W)
    and the per-item clip counts. uint16 fixed point (from `shared.imagebind.video`) or
    float32 already normalised; the dtype is kept (normalised on the device)."""
    shape = ", ".join(map(str, clip_shape))
    if isinstance(value, np.ndarray | torch.Tensor):
        x = to_cpu_tensor(value, "video")
        if x.ndim != 6 or tuple(x.shape[2:]) != clip_shape or x.shape[0] == 0 or x.shape[1] == 0:
            raise bad_input(f"video must have shape (B>=1, clips>=1, {shape}), got {tuple(x.shape)}")
        items = list(x)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) > 0:
        items = [to_cpu_tensor(item, "video items") for item in value]
    else:
        raise bad_input(f"video must be a (B, clips, {shape}) array or a non-empty sequence of clip arrays")
    dtypes = {item.dtype for item in items}
    for i, item in enumerate(items):
        if item.ndim != 5 or tuple(item.shape[1:]) != clip_shape or item.shape[0] == 0:
            raise bad_input(f"video item {i} must have shape (clips>=1, {shape}), got {tuple(item.shape)}")
        if item.dtype not in (torch.uint16, torch.float32) or len(dtypes) > 1:
            raise bad_input(
                f"video clips must all be uint16 fixed point or all float32, got {sorted(map(str, dtypes))}"
            )
    clips = torch.cat(items) if len(items) > 1 else items[0]  # (N, 3, T, H, W)
    require_finite(clips, "video clips")
    return clips, tuple(int(item.shape[0]) for item in items)
