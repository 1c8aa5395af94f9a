"""Media files that tests build in memory."""

from __future__ import annotations

import io
import wave

import numpy as np


def wav_bytes_from_float(samples: np.ndarray, rate_hz: int) -> bytes:
    """A 16-bit PCM WAV of `samples`, floats in [-1, 1] shaped (channels, samples)."""
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(pcm.T.tobytes())
    return buf.getvalue()
