"""Write the spoken-word test fixtures (tests/fixtures/speech/): espeak-ng speech, silence,
tones and a corrupt track, all 16 kHz mono 16-bit PCM WAVs, and a small MP4 video whose
audio track is the spoken threat.

The WAVs are committed, so tests never need espeak-ng; this script only regenerates them:

    apt-get install -y espeak-ng
    python tools/make_speech_fixtures.py

espeak-ng writes 22,050 Hz; PyAV resamples to Whisper's 16 kHz.
"""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import av
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech"
RATE = 16_000

# name -> (espeak-ng voice, words)
SPOKEN: dict[str, tuple[str, str]] = {
    "calm": (
        "en-us",
        "The weather is lovely today. Let's meet at the library at three o'clock and talk about the garden.",
    ),
    "threat": ("en-us", "I am going to kill you tomorrow."),
    "scam": (
        "en-us",
        "Hello, this is your bank. Your account has been locked. "
        "Please send your bank details and the gift card codes to verify your account.",
    ),
    "refund": ("en-us", "Our refund policy is simple: you can return any item within thirty days for a full refund."),
    "french": ("fr", "Bonjour à tous. Le marché ouvre à huit heures et le pain est très bon ici."),
    "german": ("de", "Guten Morgen. Der Zug nach Berlin fährt um neun Uhr ab, und das Wetter ist heute schön."),
    "spanish": ("es", "Buenos días a todos. El mercado abre a las ocho y el pan es muy bueno aquí."),
}


def speak(voice: str, words: str) -> np.ndarray:
    """espeak-ng's WAV of `words`, as 16 kHz mono int16 samples."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", words], check=True, capture_output=True).stdout
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    chunks: list[np.ndarray] = []
    with av.open(io.BytesIO(wav), mode="r", format="wav") as container:
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.int16)


def tones(seconds: float) -> np.ndarray:
    """A music-like sequence of chords (no speech)."""
    t = np.arange(int(seconds * RATE)) / RATE
    notes = (261.63, 329.63, 392.0, 523.25)
    signal = sum(
        np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * (i + 1) * 0.5 * t)) for i, f in enumerate(notes)
    )
    return (0.2 * signal / len(notes) * 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.astype("<i2").tobytes())


def spoken_video(path: Path, speech: np.ndarray, *, fps: int = 10) -> None:
    """A small H.264 + AAC MP4 (64x48 grey frames) whose audio track is `speech` (16 kHz)."""
    seconds = speech.size / RATE
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=RATE)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            pixels = np.full((48, 64, 3), 40 + (i * 7) % 200, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        floats = (speech.astype(np.float32) / 32768).reshape(1, -1)
        for start in range(0, floats.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(floats[:, start : start + 1024]), format="flt", layout="mono"
            )
            frame.sample_rate = RATE
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


def flac(path: Path, samples: np.ndarray) -> None:
    """16 kHz mono FLAC (the demo's spoken sample, producers/samples/refund-policy.flac)."""
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=RATE)
        stream.layout = "mono"
        for start in range(0, samples.size, 4096):
            chunk = np.ascontiguousarray(samples[start : start + 4096].astype(np.int16)[None, :])
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    silence = np.zeros(RATE // 2, dtype=np.int16)
    for name, (voice, words) in SPOKEN.items():
        write_wav(OUT / f"{name}.wav", np.concatenate([silence, speak(voice, words), silence]))
    write_wav(OUT / "silence.wav", np.zeros(3 * RATE, dtype=np.int16))
    demo = OUT.parents[2] / "producers" / "samples" / "refund-policy.flac"
    flac(demo, np.concatenate([silence, speak(*SPOKEN["refund"]), silence]))
    threat = speak(*SPOKEN["threat"])
    spoken_video(OUT / "threat_video.mp4", np.concatenate([silence, threat, silence]))
    write_wav(OUT / "tones.wav", tones(4.0))
    # A valid header promising 2 s, then bytes that are not what it promises (cut short).
    good = io.BytesIO()
    write_wav_to = OUT / "corrupt.wav"
    with wave.open(good, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.zeros(2 * RATE, dtype="<i2").tobytes())
    write_wav_to.write_bytes(good.getvalue()[:44] + b"\x00\x01" * 500)
    for path in sorted(OUT.glob("*.*")):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
