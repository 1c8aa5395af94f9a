"""Numbers ImageBind's inputs are normalised with, and the one function that applies them
to images. Shared by CPU preprocessing (golden tests) and the GPU embedder, which receives
compact uint8 images and normalises them on the device."""

from __future__ import annotations

import torch

IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIO_SAMPLE_RATE_HZ = 16_000
AUDIO_NUM_MEL_BINS = 128
AUDIO_TARGET_FRAMES = 204
AUDIO_CLIP_DURATION_S = 2.0
AUDIO_CLIPS_PER_FILE = 3
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138

TEXT_CONTEXT_LENGTH = 77
TEXT_SOT_TOKEN = 49406
TEXT_EOT_TOKEN = 49407
TEXT_VOCAB_SIZE = 49408


def normalize_image(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> float32 CLIP-normalised, on the tensor's own device.

    Same arithmetic as torchvision's ToTensor + Normalize (divide by 255, then (x-mean)/std),
    so results equal the reference bit for bit on CPU.
    """
    x = pixels.to(torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x - mean) / std
