"""Band-limited resampling, a numpy port of ``torchaudio.functional.resample``.

The reference resamples every upload to 16 kHz with torchaudio's defaults
(``sinc_interp_hann``, ``lowpass_filter_width=6``, ``rolloff=0.99``). The same FIR kernel,
built with the same float32 arithmetic, applied as the same strided convolution, gives the
same samples up to float32 rounding, without torchaudio at run time.

For rates whose ratio does not reduce (44 056 Hz -> 16 kHz is 5507:2000) the polyphase
kernel gets huge; `kernel_is_affordable` tells the decoder to let FFmpeg bring such audio to
48 kHz first.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
# Polyphase kernel entries (new_rate x taps after dividing both rates by their gcd) we are
# willing to build: 44.1 kHz -> 16 kHz needs 76 000, 11.025 kHz -> 16 kHz 291 000.
MAX_KERNEL_ENTRIES = 1 << 21
# Output frames (one per input stride) computed per matrix product, bounding temporaries.
_FRAMES_PER_CHUNK = 8192


def _reduced(orig_hz: int, new_hz: int) -> tuple[int, int]:
    gcd = math.gcd(orig_hz, new_hz)
    return orig_hz // gcd, new_hz // gcd


def _width(orig: int, new: int) -> int:
    return math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))


def kernel_is_affordable(orig_hz: int, new_hz: int) -> bool:
    """Whether resampling `orig_hz` -> `new_hz` needs at most `MAX_KERNEL_ENTRIES` taps."""
    orig, new = _reduced(orig_hz, new_hz)
    return new * (2 * _width(orig, new) + orig) <= MAX_KERNEL_ENTRIES


@functools.lru_cache(maxsize=16)
def sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """torchaudio's ``_get_sinc_resample_kernel`` for reduced rates `orig`:`new`, computed in
    float32 as torchaudio does for a float32 waveform. Returns (kernel (new, taps), width)."""
    base_hz = min(orig, new) * ROLLOFF
    width = _width(orig, new)
    f32 = np.float32
    idx = np.arange(-width, width + orig, dtype=f32)[None, :] / f32(orig)
    t = np.arange(0, -new, -1, dtype=f32)[:, None] / f32(new) + idx  # (new, taps)
    t *= f32(base_hz)
    t = np.clip(t, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(t * f32(math.pi) / f32(LOWPASS_FILTER_WIDTH) / f32(2)) ** 2
    t *= f32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, f32(1.0), np.sin(t) / t)
    kernel *= window * f32(base_hz / orig)
    kernel.setflags(write=False)
    return kernel.astype(f32, copy=False), width


def resample(waveform: np.ndarray, orig_hz: int, new_hz: int) -> np.ndarray:
    """Resample float32 `waveform` (..., time) from `orig_hz` to `new_hz`.

    Returns float32 (..., ceil(new_hz * time / orig_hz)), or `waveform` itself when the
    rates are equal. Raises `ValueError` for non-positive rates or a kernel beyond
    `MAX_KERNEL_ENTRIES` (check `kernel_is_affordable` first).
    """
    if orig_hz <= 0 or new_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_hz} and {new_hz}")
    if orig_hz == new_hz:
        return waveform
    if not kernel_is_affordable(orig_hz, new_hz):
        raise ValueError(f"resampling {orig_hz} Hz -> {new_hz} Hz needs too large a kernel")
    orig, new = _reduced(orig_hz, new_hz)
    kernel, width = sinc_kernel(orig, new)
    taps = kernel.shape[1]
    leading, length = waveform.shape[:-1], waveform.shape[-1]
    rows = np.ascontiguousarray(waveform, dtype=np.float32).reshape(-1, length)
    # As torchaudio: zero-pad, then conv1d with stride `orig` and one output channel per
    # phase; output frame f, phase p is sample f * new + p.
    padded = np.pad(rows, ((0, 0), (width, width + orig)))
    n_frames = (padded.shape[1] - taps) // orig + 1
    windows = sliding_window_view(padded, taps, axis=1)[:, ::orig]  # (rows, n_frames, taps), a view
    out = np.empty((rows.shape[0], n_frames, new), dtype=np.float32)
    for start in range(0, n_frames, _FRAMES_PER_CHUNK):
        stop = min(start + _FRAMES_PER_CHUNK, n_frames)
        np.matmul(windows[:, start:stop], kernel.T, out=out[:, start:stop])
    target_length = math.ceil(new * length / orig)
    return out.reshape(rows.shape[0], -1)[:, :target_length].reshape(*leading, target_length)
