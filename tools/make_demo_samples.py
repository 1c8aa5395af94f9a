"""Regenerate the small sample files `omnibind demo` ingests (producers/samples/).

Deterministic: images drawn with Pillow, audio synthesised with numpy and written as WAV /
FLAC with PyAV, texts written as UTF-8; the video (H.264 + AAC with PyAV) is not
bit-reproducible (x264). Run: python tools/make_demo_samples.py
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "producers" / "samples"
RATE_HZ = 16_000


def image(name: str, colour: str, shape: str) -> None:
    img = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(img)
    box = (90, 50, 230, 190)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(160, 40), (240, 200), (80, 200)], fill=colour)
    path = OUT / name
    img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)


def wav(name: str, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(OUT / name), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
        out.writeframes(pcm.tobytes())


def flac(name: str, samples: np.ndarray) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=RATE_HZ, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = RATE_HZ
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    (OUT / name).write_bytes(buffer.getvalue())


def video(name: str, seconds: float = 3.0, fps: int = 10) -> None:
    """A red circle crossing a white 160x120 frame, with a 440 Hz tone as its sound (MP4,
    H.264 + AAC, ~30 KB). x264 output is not bit-reproducible: regenerate only on purpose."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        sound = container.add_stream("aac", rate=RATE_HZ)
        sound.layout = "mono"
        frames = round(seconds * fps)
        for i in range(frames):
            img = Image.new("RGB", (160, 120), "white")
            x = 20 + (120 * i) // max(frames - 1, 1)
            ImageDraw.Draw(img).ellipse((x - 18, 42, x + 18, 78), fill="red")
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
        tone = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, tone.size, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate = RATE_HZ
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)
    (OUT / name).write_bytes(buffer.getvalue())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(2.0 * RATE_HZ)) / RATE_HZ
    image("red-circle.png", "red", "circle")
    image("blue-square.jpg", "blue", "square")
    image("green-triangle.png", "green", "triangle")
    wav("tone-440hz.wav", 0.5 * np.sin(2 * np.pi * 440 * t))
    wav("white-noise.wav", 0.3 * rng.standard_normal(t.size))
    flac("chirp.flac", 0.5 * np.sin(2 * np.pi * (200 + 900 * t) * t))
    video("red-circle-moving.mp4")
    texts = {
        "red-circle.txt": "a red circle on a white background",
        "dog.txt": "a dog barking loudly in the park",
        "ocean.txt": "waves crashing on a rocky beach",
    }
    for name, text in texts.items():
        (OUT / name).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
