"""Numbers ImageBind's inputs are shaped and normalised with: the one place both CPU
preprocessing and the model read them from.

Plain numbers, no torch: preprocessing processes (the cpu worker's pool) import this module,
and must stay free of torch (`tests/test_torch_free.py`, the import-linter contracts in
pyproject.toml). The torch half, `normalize_image`, lives in `shared.imagebind.normalize`.
"""

from __future__ import annotations

IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Video: 5 clips of 2 s, 2 frames each, 3 spatial crops (imagebind.data.load_and_transform_video_data);
# the vision stem's Conv3d spans VIDEO_FRAMES frames.
VIDEO_CLIPS = 5
VIDEO_CLIP_DURATION_S = 2.0
VIDEO_FRAMES = 2
VIDEO_CROPS = 3

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
