"""Video -> ImageBind vision input: 15 two-frame clips (5 times x 3 spatial crops).

What the reference (`imagebind.data.load_and_transform_video_data`) does, step by step:

1. 5 clips of 2 s placed by the official pytorchvideo ``ConstantClipsPerVideoSampler``:
   start_k = k * max(d - 2, 0) / 4 (`clip_times`; PyPI's pytorchvideo 0.1.5 divides by 5),
   with d = frames / average fps as decord reports them;
2. a clip is the frames ceil(fps * start) .. min(ceil(fps * end), frames) - 1, of which
   ``UniformTemporalSubsample(2)`` keeps the first and the last (`clip_frames`);
3. pixels / 255, ``ShortSideScale(224)``: the shorter side to 224, the longer to
   floor(224 * long / short), bilinear, align_corners=False (`scaled_crops`);
4. CLIP mean/std, then ``SpatialCrop(224, 3)``: left/centre/right squares of a landscape
   frame, top/centre/bottom of a portrait one, centre offset ceil((long - 224) / 2);
5. clips in order (clip 0: crops 0, 1, 2; clip 1: ...) -> (15, 3, 2, 224, 224).

Here only the 10 frames needed are decoded (`shared.media.video`), and only the output
rows and columns the three crops keep are interpolated (a 100000x2 video costs no more
than a square one). The result travels as uint16 fixed point of the 0..1 value
(x / 255 * 65535 = x * 257 for 8-bit x; at most 7.6e-6 from the float, 2.9e-5 after
normalisation), 9 MB per video: uint8 would lose up to 0.0075 after normalisation, and the
GPU side (`shared.imagebind.normalize.normalize_video`) applies mean/std as for images. No
torch here: the cpu worker's pool processes run this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from shared.imagebind.constants import IMAGE_SIZE, VIDEO_CLIP_DURATION_S, VIDEO_CLIPS, VIDEO_CROPS, VIDEO_FRAMES
from shared.media.video import DecodedFrames, VideoInfo, VideoLimits, decode_frames

# uint16 steps per 8-bit level: 255 * 257 = 65535, so x * 257 / 65535 == x / 255 exactly.
FIXED_POINT_SCALE = 257
FIXED_POINT_MAX = 65535


@dataclass(frozen=True, slots=True)
class PreparedVideo:
    """`clips`: uint16 (15, 3, 2, 224, 224) fixed point of the 0..1 pixels; `frames`: what was
    decoded (for the detectors: frames by index, with their times)."""

    clips: np.ndarray
    frames: DecodedFrames
    clip_indices: tuple[tuple[int, ...], ...]


def preprocess_video(data: bytes, *, format: str, limits: VideoLimits) -> PreparedVideo:
    """Video upload bytes -> `PreparedVideo`. Raises what `shared.media.video.decode_frames` raises."""
    chosen: list[tuple[int, ...]] = []

    def pick(info: VideoInfo) -> list[int]:
        chosen.extend(clip_frames(info.frame_count, info.fps))
        return [index for clip in chosen for index in clip]

    decoded = decode_frames(data, format=format, limits=limits, pick=pick)
    clips = frames_to_clips([[decoded.frames[index] for index in clip] for clip in chosen])
    return PreparedVideo(clips, decoded, tuple(chosen))


def clip_times(
    duration_s: float, clips: int = VIDEO_CLIPS, clip_duration_s: float = VIDEO_CLIP_DURATION_S
) -> list[tuple[Fraction, Fraction]]:
    """(start, end) of each clip, in seconds, as the official pytorchvideo sampler places them:
    start_k = k * max(d - clip, 0) / max(clips - 1, 1), end = start + clip (may pass the end
    of a short video)."""
    clip_s = Fraction(clip_duration_s)
    # float - Fraction is a float in Python, as in pytorchvideo
    max_start = Fraction(max(duration_s - clip_s, 0))
    starts = [Fraction(max_start * k / max(clips - 1, 1)) for k in range(clips)]
    return [(start, Fraction(start + clip_s)) for start in starts]


def clip_frames(
    frame_count: int, fps: float, clips: int = VIDEO_CLIPS, frames_per_clip: int = VIDEO_FRAMES
) -> list[tuple[int, ...]]:
    """Frame indices of each clip, as the reference reads them: pytorchvideo's decord
    ``get_clip`` (frames ceil(fps * start) .. min(ceil(fps * end), n) - 1) subsampled by
    ``UniformTemporalSubsample(frames_per_clip)`` (linspace over the clip, truncated)."""
    if frame_count < 1 or fps <= 0:
        raise ValueError(f"a video needs frames and a frame rate, got {frame_count} frames at {fps} fps")
    duration_s = float(frame_count) / float(fps)
    chosen = []
    for start, end in clip_times(duration_s, clips):
        first = math.ceil(fps * start)
        stop = min(math.ceil(fps * end), frame_count)
        span = max(stop - first, 1)
        # torch.linspace(0, t - 1, m) in float32, clamped, then .long() (truncation)
        offsets = np.clip(np.linspace(0, span - 1, frames_per_clip, dtype=np.float32), 0, span - 1).astype(np.int64)
        chosen.append(tuple(min(first + int(offset), frame_count - 1) for offset in offsets))
    return chosen


def frames_to_clips(clips: list[list[np.ndarray]], size: int = IMAGE_SIZE) -> np.ndarray:
    """Per clip, its frames (uint8 RGB (H, W, 3), one size) -> uint16 (clips * 3, 3, T, size, size)
    fixed point: every clip's 3 spatial crops, in the reference's order."""
    out = np.empty((len(clips) * VIDEO_CROPS, 3, len(clips[0]), size, size), dtype=np.uint16)
    for c, frames in enumerate(clips):
        for t, frame in enumerate(frames):
            crops = scaled_crops(frame, size)  # (3 crops, size, size, 3) in 0..255
            fixed = np.rint(crops * np.float32(FIXED_POINT_SCALE))
            # (crops, H, W, C) -> (crops, C, H, W)
            out[c * VIDEO_CROPS : (c + 1) * VIDEO_CROPS, :, t] = fixed.astype(np.uint16).transpose(0, 3, 1, 2)
    return out


def short_side_size(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(height, width) after pytorchvideo's ``short_side_scale``: the shorter side becomes
    `size`, the longer floor(long / short * size) (in float, as it computes it)."""
    if width < height:
        return math.floor((float(height) / width) * size), size
    return size, math.floor((float(width) / height) * size)


def crop_origins(height: int, width: int, size: int = IMAGE_SIZE) -> list[tuple[int, int]]:
    """(top, left) of ``SpatialCrop``'s 3 crops (spatial_idx 0, 1, 2) of a (height, width)
    frame: along the longer side (height when strictly taller) 0, ceil((long - size) / 2),
    long - size; centred across."""
    top, left = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if height > width:
        return [(0, left), (top, left), (height - size, left)]
    return [(top, 0), (top, left), (top, width - size)]


def scaled_crops(frame: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, size, size, 3): the 3 spatial crops of the frame
    after the short-side bilinear scale, in 0..255 (interpolation is linear, so / 255 may
    come after). Only the rows and columns the crops keep are computed."""
    height, width = frame.shape[:2]
    new_h, new_w = short_side_size(height, width, size)
    origins = crop_origins(new_h, new_w, size)
    rows = sorted({top + r for top, _ in origins for r in range(size)})
    cols = sorted({left + c for _, left in origins for c in range(size)})
    r0, r1, rw0, rw1 = bilinear_taps(height, new_h, np.asarray(rows))
    c0, c1, cw0, cw1 = bilinear_taps(width, new_w, np.asarray(cols))
    # rows first: (len(rows), W, 3), then columns: (len(rows), len(cols), 3); only the rows
    # read are converted to float (a 4K frame in float32 would be 100 MB)
    by_rows = frame[r0].astype(np.float32) * rw0[:, None, None] + frame[r1].astype(np.float32) * rw1[:, None, None]
    scaled = by_rows[:, c0] * cw0[None, :, None] + by_rows[:, c1] * cw1[None, :, None]
    row_at = {row: i for i, row in enumerate(rows)}
    col_at = {col: i for i, col in enumerate(cols)}
    crops = np.empty((len(origins), size, size, 3), dtype=np.float32)
    for n, (top, left) in enumerate(origins):
        r, c = row_at[top], col_at[left]
        # the crop's rows/cols are consecutive in `rows`/`cols` (sorted, without gaps inside a crop)
        crops[n] = scaled[r : r + size, c : c + size]
    return crops


def bilinear_taps(
    in_size: int, out_size: int, out_indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of `out_indices` under torch's bilinear interpolate
    (align_corners=False, no antialias), in float32 as torch computes them on the CPU:
    src = max(scale * (dst + 0.5) - 0.5, 0), scale = in / out; taps floor(src) and the next
    (clamped), weights 1 - frac and frac."""
    scale = np.float32(in_size) / np.float32(out_size)
    # torch's scale * (dst + 0.5) - 0.5 compiles to a fused multiply-add: one rounding to
    # float32 at the end. In float64 the product is exact, so rounding once here matches it
    # (two float32 roundings would move the weights by up to 1.5e-5 at source index ~480).
    exact = np.float64(scale) * (out_indices.astype(np.float64) + 0.5) - 0.5
    src = np.maximum(exact.astype(np.float32), np.float32(0))
    first = np.minimum(src.astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    weight1 = (src - first.astype(np.float32)).astype(np.float32)
    weight0 = (np.float32(1) - weight1).astype(np.float32)
    return first, second, weight0, weight1
