"""The model-side half of input normalisation: CLIP mean/std applied to uint8 images on the
GPU, which receives compact uint8 images from CPU preprocessing. Needs torch; the numbers
themselves live in `shared.imagebind.constants` and CPU preprocessing in
`shared.imagebind.image`, both torch-free."""

from __future__ import annotations

import torch

from shared.imagebind.constants import CLIP_MEAN, CLIP_STD
from shared.imagebind.image import preprocess_image
from shared.imagebind.video import FIXED_POINT_MAX


def normalize_image(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> float32 CLIP-normalised, on the tensor's own device.

    Same arithmetic as torchvision's ToTensor + Normalize (divide by 255, then (x-mean)/std),
    so results equal the reference bit for bit on CPU.
    """
    x = pixels.to(torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def normalize_video(fixed: torch.Tensor) -> torch.Tensor:
    """uint16 fixed-point clips (..., 3, T, H, W) from `shared.imagebind.video` (or the same
    bits viewed as int16) -> float32
    CLIP-normalised, on the tensor's own device: x / 65535 is the reference's pixel / 255
    after its float interpolation (to within 7.6e-6), then (x - mean) / std per channel."""
    if fixed.dtype in (torch.uint16, torch.int16):
        # uint16 has only "limited support" in torch (CUDA kernels among the gaps): read the
        # bits as int16 (`prepare` sends them so), widen, and mask back to 0..65535.
        fixed = fixed.view(torch.int16).to(torch.int32).bitwise_and(FIXED_POINT_MAX)
    x = fixed.to(torch.float32).div(FIXED_POINT_MAX)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    return (x - mean) / std


def preprocess_image_normalized(data: bytes, *, max_pixels: int, format: str | None = None) -> torch.Tensor:
    """`shared.imagebind.image.preprocess_image`, then CLIP-normalised: float32 tensor
    (3, 224, 224), equal to the reference's output. For golden tests and callers without a
    GPU stage."""
    return normalize_image(torch.from_numpy(preprocess_image(data, max_pixels=max_pixels, format=format)))
