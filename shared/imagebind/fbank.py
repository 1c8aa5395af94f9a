"""Kaldi log-mel filterbank features, a numpy port of ``torchaudio.compliance.kaldi.fbank``
for the arguments ImageBind's reference uses (``waveform2melspec``): 16 kHz, 25 ms Hann
(``hanning``) frames every 10 ms, DC removal and 0.97 pre-emphasis per frame, 512-point
power spectrum, 128 triangular mel bins from 20 Hz to Nyquist, natural log floored at
float32 epsilon, no dither, no energy column, frames that do not fit are dropped
(``snip_edges``).

Arithmetic is float64 (torchaudio's is float32 for a float32 waveform): the results agree
with the reference to float32 rounding, and where the reference's own float32 noise
matters (log of mel bins ~100 dB below the frame's loudest) ours is the more accurate.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from shared.imagebind.constants import AUDIO_NUM_MEL_BINS, AUDIO_SAMPLE_RATE_HZ

FRAME_LENGTH_MS = 25
FRAME_SHIFT_MS = 10
PREEMPHASIS = 0.97
LOW_FREQ_HZ = 20.0
# std::numeric_limits<float>::epsilon(), Kaldi's floor before the log.
LOG_FLOOR = float(np.finfo(np.float32).eps)


def frame_geometry(sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> tuple[int, int, int]:
    """(window, shift, fft size) in samples: 400, 160, 512 at 16 kHz."""
    window = int(sample_rate_hz * FRAME_LENGTH_MS * 0.001)
    shift = int(sample_rate_hz * FRAME_SHIFT_MS * 0.001)
    return window, shift, 1 << (window - 1).bit_length()


def num_frames(num_samples: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> int:
    """Frames that fit in `num_samples` (0 when fewer than one window)."""
    window, shift, _ = frame_geometry(sample_rate_hz)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def _mel(freq_hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + freq_hz / 700.0)


@functools.lru_cache(maxsize=4)
def mel_banks(num_bins: int, fft_size: int, sample_rate_hz: int) -> np.ndarray:
    """Kaldi's triangular mel filters as a (num_bins, fft_size // 2 + 1) matrix (the
    Nyquist column is zero, as in Kaldi)."""
    nyquist = 0.5 * sample_rate_hz
    mel_low, mel_high = _mel(np.array([LOW_FREQ_HZ, nyquist]))
    delta = (mel_high - mel_low) / (num_bins + 1)
    bins = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + bins * delta, mel_low + (bins + 1) * delta, mel_low + (bins + 2) * delta
    mel = _mel(sample_rate_hz / fft_size * np.arange(fft_size // 2, dtype=np.float64))[None, :]
    up, down = (mel - left) / (center - left), (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    banks = np.pad(banks, ((0, 0), (0, 1)))
    banks.setflags(write=False)
    return banks


@functools.lru_cache(maxsize=4)
def _hann(window: int) -> np.ndarray:
    # torch.hann_window(window, periodic=False)
    return 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(window) / (window - 1))


def fbank(
    waveform: np.ndarray, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ, num_mel_bins: int = AUDIO_NUM_MEL_BINS
) -> np.ndarray:
    """Mono `waveform` (samples,) -> log-mel energies float64 (frames, num_mel_bins).

    Raises `ValueError` when the waveform is shorter than one frame (the reference fails
    there too; `shared.imagebind.audio` pads such clips first).
    """
    window, shift, fft_size = frame_geometry(sample_rate_hz)
    if waveform.ndim != 1 or waveform.shape[0] < window:
        raise ValueError(f"need a 1-D waveform of at least {window} samples, got shape {waveform.shape}")
    frames = sliding_window_view(waveform.astype(np.float64), window)[::shift]  # (frames, window)
    frames = frames - frames.mean(axis=1, keepdims=True)
    # Pre-emphasis: x[j] - 0.97 x[j-1], the first sample paired with itself (Kaldi).
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - PREEMPHASIS * previous) * _hann(window)
    power = np.abs(np.fft.rfft(frames, n=fft_size, axis=1)) ** 2  # (frames, fft_size // 2 + 1)
    energies = power @ mel_banks(num_mel_bins, fft_size, sample_rate_hz).T
    return np.log(np.maximum(energies, LOG_FLOOR))
