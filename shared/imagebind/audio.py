"""Audio -> ImageBind audio input: normalised log-mel clips (n_clips, 1, 128, 204) float32.

What the reference (`imagebind.data.load_and_transform_audio_data`) does, step by step:

1. resample every channel to 16 kHz (`shared.imagebind.resample`);
2. place clips of 2 s with the official pytorchvideo ``ConstantClipsPerVideoSampler``:
   3 clips at start_k = k * max(d - 2, 0) / 2 (`clip_ranges`);
3. per clip, subtract the mean of all channels *in place* on the shared waveform, then
   compute Kaldi fbank on channel 0 only (`shared.imagebind.fbank`), so a stereo file is
   heard through its first channel. Clips overlap when 2 s < d < 6 s, and the in-place
   subtraction of an earlier clip then shifts part of a later one; we reproduce that too;
4. 198 frames, zero-padded (or cut) to 204 columns, then (x + 4.268) / 9.138.

Two modes (`AudioMode`): ``"reference"`` is the above; ``"full"`` covers the whole file
with ceil(d / 2) clips placed by the same sampler (evenly, first at 0, last ending at the
end; the paper's protocol), each clip de-meaned on its own copy.

Where we deliberately differ: a clip shorter than one 25 ms window (the reference crashes)
is zero-padded to one window after de-meaning, giving one frame.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

import numpy as np

from shared.errors import CorruptMedia
from shared.imagebind.constants import (
    AUDIO_CLIP_DURATION_S,
    AUDIO_CLIPS_PER_FILE,
    AUDIO_MEAN,
    AUDIO_NUM_MEL_BINS,
    AUDIO_SAMPLE_RATE_HZ,
    AUDIO_STD,
    AUDIO_TARGET_FRAMES,
)
from shared.imagebind.fbank import fbank, frame_geometry
from shared.imagebind.resample import kernel_is_affordable, resample
from shared.media.audio import AudioTrackInfo, DecodedAudio, decode_audio, decode_audio_windows

AudioMode = Literal["reference", "full"]
AUDIO_MODES: tuple[AudioMode, ...] = ("reference", "full")
# Rate FFmpeg brings audio to first when our exact resampler would need too large a kernel
# (rates whose ratio to 16 kHz does not reduce, e.g. 44 056 Hz).
FALLBACK_RATE_HZ = 48_000
# A video's audio track at least this long is read by seeking to its clips
# (`preprocess_audio_track`); decoding a shorter one whole costs about the same.
SEEK_MIN_S = 30.0
# Decoded before and after each clip: covers the resampler's kernel (a few ms) and the
# decoder's first frame after a seek (AAC: 64 ms).
SEEK_MARGIN_S = 0.5


def preprocess_audio(
    data: bytes, *, max_duration_s: float, mode: AudioMode = "reference", format: str | None = None
) -> np.ndarray:
    """Audio upload bytes -> float32 (n_clips, 1, 128, 204), normalised.

    `mode` picks the clips (module docstring); `format` is the sniffed format name, if
    known. Raises what `shared.media.audio.decode_audio` raises.
    """
    decoded = decode_audio(data, max_duration_s=max_duration_s, format=format, output_rate_hz=decode_rate_hz)
    return decoded_to_clips(decoded, mode=mode)


def decode_rate_hz(stream_rate_hz: int) -> int:
    """The stream's own rate, unless resampling it to 16 kHz exactly would need too large
    a kernel; then `FALLBACK_RATE_HZ` (FFmpeg's resampler, not the reference's, does that
    first step)."""
    if kernel_is_affordable(stream_rate_hz, AUDIO_SAMPLE_RATE_HZ):
        return stream_rate_hz
    return FALLBACK_RATE_HZ


def decoded_to_clips(audio: DecodedAudio, *, mode: AudioMode = "reference") -> np.ndarray:
    """Decoded audio (channel 0 plus the mean over channels) -> normalised clips."""
    return melspec_clips(audio.channel0, audio.sample_rate_hz, channel_mean=audio.channel_mean, mode=mode)


def waveform_to_clips(waveform: np.ndarray, sample_rate_hz: int, *, mode: AudioMode = "reference") -> np.ndarray:
    """float32 (channels, samples) at any rate -> normalised clips, as the reference turns
    a loaded waveform into model input."""
    if waveform.ndim != 2 or waveform.shape[0] < 1:
        raise ValueError(f"expected (channels, samples), got shape {waveform.shape}")
    waveform = waveform.astype(np.float32, copy=False)
    channel_mean = waveform.mean(axis=0, dtype=np.float64).astype(np.float32) if waveform.shape[0] > 1 else None
    return melspec_clips(waveform[0], sample_rate_hz, channel_mean=channel_mean, mode=mode)


def melspec_clips(
    channel0: np.ndarray,
    sample_rate_hz: int,
    *,
    channel_mean: np.ndarray | None = None,
    mode: AudioMode = "reference",
) -> np.ndarray:
    """The core: first channel (samples,) and, for multichannel audio, the per-sample mean
    over all channels (samples,) -> float32 (n_clips, 1, 128, 204), normalised.

    Raises `ValueError` for an empty waveform or an unknown mode.
    """
    if mode not in AUDIO_MODES:
        raise ValueError(f"unknown audio mode {mode!r}; expected one of {AUDIO_MODES}")
    if channel0.size == 0:
        raise ValueError("empty waveform")
    # rows: (channel 0, mean over channels) at 16 kHz, one row for mono; a new array, so
    # the in-place de-meaning below never reaches the caller's
    rows = np.stack([channel0] if channel_mean is None else [channel0, channel_mean]).astype(np.float32)
    rows = resample(rows, sample_rate_hz, AUDIO_SAMPLE_RATE_HZ)
    num_samples = rows.shape[1]
    clips = AUDIO_CLIPS_PER_FILE if mode == "reference" else full_mode_clip_count(num_samples / AUDIO_SAMPLE_RATE_HZ)
    out = np.empty((clips, 1, AUDIO_NUM_MEL_BINS, AUDIO_TARGET_FRAMES), dtype=np.float32)
    for k, (start, stop) in enumerate(clip_ranges(num_samples, clips)):
        # Reference mode: a view, de-meaned in place like the reference's waveform slice.
        out[k, 0] = clip_features(rows[:, start:stop] if mode == "reference" else rows[:, start:stop].copy())
    return out


def clip_features(clip: np.ndarray) -> np.ndarray:
    """One clip's rows (channel 0[, mean over channels]) at 16 kHz -> normalised log-mel
    (128, 204). De-means `clip` in place by the mean of its last row, as the reference does."""
    clip -= clip[-1].mean(dtype=np.float64).astype(np.float32)
    return normalize_melspec(melspec(clip[0]))


def preprocess_audio_track(
    data: bytes, *, format: str, max_duration_s: float, mode: AudioMode = "reference"
) -> np.ndarray:
    """A video's audio track -> normalised clips, as `preprocess_audio` would give them.

    In reference mode a track of at least `SEEK_MIN_S` is read by seeking: only its 3 clips
    (with `SEEK_MARGIN_S` on each side) are decoded, so cost does not grow with its length
    and `max_duration_s` does not apply (the video's own limits do). The clips are placed
    from the declared duration (exact for MP4/Matroska), resampled on the same sample grid
    as the whole track would be, so they equal the whole-track result but for the decoder's
    state at the margin. Shorter tracks, "full" mode, and rates FFmpeg must convert first
    decode the whole track (`preprocess_audio`, with `max_duration_s`).
    Raises what `shared.media.audio.decode_audio_windows` raises, and ``truncated_audio``
    when a clip's samples are missing (a header longer than the data).
    """
    if mode == "reference":
        track, windows = decode_audio_windows(data, format=format, windows=_clip_windows)
        if windows:  # empty: not worth seeking (short, or a rate FFmpeg converts first)
            return _windowed_clips(track, windows)
    return preprocess_audio(data, max_duration_s=max_duration_s, mode=mode, format=format)


def _clip_windows(track: AudioTrackInfo) -> list[tuple[int, int]]:
    """Stream sample ranges to decode for the 3 reference clips, each starting on the
    resampler's grid (a multiple of the reduced input rate, so that its output samples are
    the whole track's), or none when seeking does not apply."""
    rate = track.rate_hz
    if track.samples < SEEK_MIN_S * rate or decode_rate_hz(rate) != rate:
        return []
    step, _ = _reduced_rates(rate)
    margin = round(SEEK_MARGIN_S * rate)
    windows = []
    for start, stop in clip_ranges(_resampled_length(track), AUDIO_CLIPS_PER_FILE):
        first = max(start * rate // AUDIO_SAMPLE_RATE_HZ - margin, 0) // step * step
        windows.append((first, min(-(-stop * rate // AUDIO_SAMPLE_RATE_HZ) + margin, track.samples)))
    return windows


def _windowed_clips(track: AudioTrackInfo, windows: list[DecodedAudio]) -> np.ndarray:
    rate = track.rate_hz
    step, new = _reduced_rates(rate)
    out = np.empty((AUDIO_CLIPS_PER_FILE, 1, AUDIO_NUM_MEL_BINS, AUDIO_TARGET_FRAMES), dtype=np.float32)
    ranges = clip_ranges(_resampled_length(track), AUDIO_CLIPS_PER_FILE)
    for k, ((start, stop), (first, _), window) in enumerate(zip(ranges, _clip_windows(track), windows, strict=True)):
        rows = [window.channel0] if window.channel_mean is None else [window.channel0, window.channel_mean]
        resampled = resample(np.stack(rows).astype(np.float32), rate, AUDIO_SAMPLE_RATE_HZ)
        offset = first // step * new  # the window's first output sample in the whole track's
        clip = resampled[:, start - offset : stop - offset]
        if clip.shape[1] < stop - start:
            raise CorruptMedia(
                f"the audio track's headers promise {track.samples / rate:.2f} s but its samples end early",
                reason="truncated_audio",
            )
        out[k, 0] = clip_features(np.ascontiguousarray(clip))
    return out


def _reduced_rates(rate_hz: int) -> tuple[int, int]:
    gcd = math.gcd(rate_hz, AUDIO_SAMPLE_RATE_HZ)
    return rate_hz // gcd, AUDIO_SAMPLE_RATE_HZ // gcd


def _resampled_length(track: AudioTrackInfo) -> int:
    """Samples of the whole track at 16 kHz (the resampler's output length)."""
    return math.ceil(AUDIO_SAMPLE_RATE_HZ * track.samples / track.rate_hz)


def full_mode_clip_count(duration_s: float) -> int:
    """Clips that cover `duration_s` in "full" mode: ceil(d / 2), at least 1."""
    return max(1, math.ceil(duration_s / AUDIO_CLIP_DURATION_S))


def clip_ranges(num_samples: int, clips: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> list[tuple[int, int]]:
    """Sample ranges [start, stop) of `clips` clips of 2 s in a waveform of `num_samples`.

    The official pytorchvideo ``ConstantClipsPerVideoSampler`` (the commit ImageBind pins):
    start_k = k * max(d - 2, 0) / max(clips - 1, 1) seconds, in exact fractions of the
    float duration d = num_samples / rate, then ``int(t * rate)`` as the reference slices.
    Clips of files shorter than 2 s all start at 0 and end at the end of the file. (PyPI's
    pytorchvideo 0.1.5 divides by `clips` instead, ending its last clip before the end.)
    """
    duration_s = num_samples / sample_rate_hz
    clip_s = Fraction(AUDIO_CLIP_DURATION_S)
    # float - Fraction is a float in Python, as in pytorchvideo
    max_start = Fraction(max(duration_s - float(clip_s), 0))
    step = max_start / max(clips - 1, 1)
    ranges = []
    for k in range(clips):
        start = step * k
        ranges.append((int(start * sample_rate_hz), min(int((start + clip_s) * sample_rate_hz), num_samples)))
    return ranges


def melspec(clip: np.ndarray) -> np.ndarray:
    """De-meaned 16 kHz mono clip -> raw log-mel (128, 204): fbank frames as columns, cut
    or zero-padded to 204 (padding is 0 before normalisation, as in the reference)."""
    window, _, _ = frame_geometry()
    if clip.shape[0] < window:
        clip = np.pad(clip, (0, window - clip.shape[0]))
    features = fbank(clip).T[:, :AUDIO_TARGET_FRAMES]  # (128, frames)
    return np.pad(features, ((0, 0), (0, AUDIO_TARGET_FRAMES - features.shape[1])))


def normalize_melspec(features: np.ndarray) -> np.ndarray:
    """(x - mean) / std in float32, as torchvision's ``Normalize(-4.268, 9.138)``."""
    return (features.astype(np.float32) - np.float32(AUDIO_MEAN)) / np.float32(AUDIO_STD)
