"""Video preprocessing against the reference's arithmetic.

The reference (imagebind.data.load_and_transform_video_data) is re-stated here in torch,
line by line from pytorchvideo's ShortSideScale (F.interpolate, bilinear), torchvision's
NormalizeVideo and ImageBind's SpatialCrop/uniform_crop, and our torch-free version (plus the
GPU-side normalisation) must reproduce it on frames of every shape. Clip placement is
checked against the official sampler's formula (not PyPI pytorchvideo 0.1.5's).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.imagebind.constants import CLIP_MEAN, CLIP_STD
from shared.imagebind.normalize import normalize_video
from shared.imagebind.video import clip_frames, clip_times, frames_to_clips, preprocess_video
from shared.media.video import VideoLimits
from tests.support.media import frame_level, video_bytes

# uint16 fixed point: at most 0.5 / 65535 (7.6e-6) from the float per pixel; our float32
# interpolation uses torch's exact weights and differs by float rounding order only (<= 2e-7);
# both / the smallest std -> 2.9e-5.
FIXED_POINT_TOLERANCE = (0.5 / 65535 + 3e-7) / min(CLIP_STD)
LIMITS = VideoLimits(
    max_duration_s=3600, max_pixels=40_000_000, max_fps=240, max_frames_decoded=5000, decode_budget_s=60
)


def reference_transform(clips: list[list[np.ndarray]]) -> torch.Tensor:
    """The reference on decoded frames: per clip (C, T, H, W) / 255, ShortSideScale(224),
    NormalizeVideo, then SpatialCrop(224, 3) -> (clips * 3, 3, T, 224, 224)."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    out = []
    for frames in clips:
        video = torch.from_numpy(np.stack(frames)).to(torch.float32).permute(3, 0, 1, 2) / 255.0  # (C, T, H, W)
        h, w = video.shape[2:]
        if w < h:
            new_h, new_w = math.floor((float(h) / w) * 224), 224
        else:
            new_h, new_w = 224, math.floor((float(w) / h) * 224)
        video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False)
        video = (video - mean) / std
        for spatial_idx in (0, 1, 2):
            y_offset = math.ceil((new_h - 224) / 2)
            x_offset = math.ceil((new_w - 224) / 2)
            if new_h > new_w:
                y_offset = {0: 0, 1: y_offset, 2: new_h - 224}[spatial_idx]
            else:
                x_offset = {0: 0, 1: x_offset, 2: new_w - 224}[spatial_idx]
            out.append(video[:, :, y_offset : y_offset + 224, x_offset : x_offset + 224])
    return torch.stack(out)


@pytest.mark.parametrize(
    ("height", "width"),
    [(48, 64), (64, 48), (224, 224), (225, 223), (1080, 1920), (1920, 1080), (101, 37), (2, 700), (480, 481)],
    ids=lambda v: str(v),
)
def test_scaled_crops_reproduce_the_reference_transform(height: int, width: int) -> None:
    rng = np.random.default_rng(height * 10_000 + width)
    clips = [[rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)] for _ in range(2)]
    ours = normalize_video(torch.from_numpy(frames_to_clips(clips)))
    expected = reference_transform(clips)
    assert ours.shape == expected.shape == (6, 3, 2, 224, 224)
    assert float((ours - expected).abs().max()) <= FIXED_POINT_TOLERANCE


def test_official_clip_placement_ends_the_last_clip_at_the_end() -> None:
    starts = [float(start) for start, _ in clip_times(10.0)]
    assert starts == [0.0, 2.0, 4.0, 6.0, 8.0]  # PyPI pytorchvideo 0.1.5 would give 0, 1.6, ..., 6.4
    assert clip_times(10.0)[-1][1] == Fraction(10)


def test_clip_frames_take_the_first_and_last_frame_of_each_window() -> None:
    # 10 s at 10 fps: windows [0, 2), [2, 4), ... -> frames 0..19, 20..39, ...
    assert clip_frames(100, 10.0) == [(0, 19), (20, 39), (40, 59), (60, 79), (80, 99)]
    # a 29.97 fps clip: ceil(fps * start), min(ceil(fps * end), n) - 1
    fps = 30000 / 1001
    n = 300
    expected = []
    for start, end in clip_times(n / fps):
        first, stop = math.ceil(fps * start), min(math.ceil(fps * end), n)
        expected.append((first, stop - 1))
    assert clip_frames(n, fps) == expected


def test_a_video_shorter_than_a_clip_repeats_the_whole_video_five_times() -> None:
    assert clip_frames(12, 10.0) == [(0, 11)] * 5
    assert clip_frames(1, 25.0) == [(0, 0)] * 5


def test_preprocess_video_gives_fifteen_clips_of_the_frames_the_reference_picks() -> None:
    data = video_bytes(seconds=10, fps=10, width=64, height=48)
    prepared = preprocess_video(data, format="mp4", limits=LIMITS)
    assert prepared.clips.shape == (15, 3, 2, 224, 224) and prepared.clips.dtype == np.uint16
    assert prepared.clip_indices == ((0, 19), (20, 39), (40, 59), (60, 79), (80, 99))
    # frame 19 is grey level frame_level(19) everywhere but the white corner; lossy coding moves it by a level or two
    for index, frame in prepared.frames.frames.items():
        assert abs(int(frame[40, 40, 0]) - frame_level(index)) <= 3, index
    # clip 1, centre crop, second frame: bottom-right pixel (grey, after scaling) in 0..1
    value = prepared.clips[4, 0, 1, -1, -1] / 65535
    assert abs(value - frame_level(39) / 255) < 4 / 255


def test_portrait_by_display_matrix_is_cropped_top_centre_bottom() -> None:
    data = video_bytes(seconds=3, fps=10, width=64, height=48, rotation=-90)
    prepared = preprocess_video(data, format="mp4", limits=LIMITS)
    frame = prepared.frames.frames[0]
    assert frame.shape == (64, 48, 3)  # displayed upright: taller than wide
    # the white square (coded top-left) is top-right after a clockwise quarter turn
    assert frame[2, -3, 0] > 240 and frame[-3, 2, 0] < 60
    clips = normalize_video(torch.from_numpy(prepared.clips))
    expected = reference_transform([[prepared.frames.frames[i] for i in clip] for clip in prepared.clip_indices])
    assert float((clips - expected).abs().max()) <= FIXED_POINT_TOLERANCE
