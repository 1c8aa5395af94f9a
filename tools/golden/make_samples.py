"""Generate the sample inputs committed under tests/fixtures/samples/ (deterministic).

Run from the repository root with the project environment:

    python tools/golden/make_samples.py [--out tests/fixtures/samples]

Images cover Pillow modes and geometries (landscape/portrait, smaller than 224, wide,
animated, EXIF-rotated, transparent, 16-bit), WAV files cover sample rates, channel counts
and lengths up to 2 s (the golden comparison with the reference needs clips <= 2 s), plus
one 5 s file for clip placement; compressed audio files (made with PyAV's encoders) feed
the decode tests; ``texts.json`` holds the tokenizer cases. `manifest.json` lists every
file with what it exercises, for the fixture script and the tests.
"""

from __future__ import annotations

import argparse
import io
import json
import wave
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image

SEED = 20240611
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "samples"


# ---------------------------------------------------------------------------- images


def _scene(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like RGB array: smooth gradients, a few discs and bars, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    img = np.stack([200 * u + 30, 180 * v + 40, 120 + 80 * np.sin(6 * u + 4 * v)], axis=-1)
    for _ in range(5):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * min(width, height)
        colour = rng.uniform(0, 255, 3)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        img[mask] = 0.35 * img[mask] + 0.65 * colour
    bar = (np.sin(xx / max(width, 1) * 40) > 0.9)[..., None]
    img = np.where(bar, img * 0.5, img)
    img += rng.normal(0, 2, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _exif_rotated_jpeg() -> bytes:
    """Stored 320x240 with EXIF orientation 6 (rotate 90° clockwise to display, 240x320)."""
    image = Image.fromarray(_scene(320, 240, SEED + 11))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(image, "JPEG", quality=90, exif=exif.tobytes())


def _transparent_png() -> bytes:
    rgb = _scene(240, 240, SEED + 12)
    yy, xx = np.mgrid[0:240, 0:240]
    alpha = np.clip(255 - np.hypot(xx - 120, yy - 120) * 2.2, 0, 255).astype(np.uint8)
    alpha[:40] = 0  # fully transparent band: its RGB is garbage the reference would keep
    rgb[:40] = (0, 0, 0)
    return _save(Image.fromarray(np.dstack([rgb, alpha])), "PNG")


def _palette_png() -> bytes:
    return _save(Image.fromarray(_scene(256, 256, SEED + 13)).quantize(colors=64, dither=Image.Dither.NONE), "PNG")


def _palette_transparent_gif() -> bytes:
    """Two frames (the first is used); palette index 0 transparent."""
    frames = []
    for k in range(2):
        p = Image.fromarray(_scene(320, 240, SEED + 14 + k)).quantize(colors=32, dither=Image.Dither.NONE)
        pixels = np.array(p)
        pixels[100:140, 50:270] = 0
        frames.append(Image.fromarray(pixels, "P"))
        frames[-1].putpalette(p.getpalette() or [])
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, transparency=0)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.fromarray(_scene(320, 240, SEED + 20 + k)).quantize(colors=64) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buf.getvalue()


def _gray16_png() -> bytes:
    gray = _scene(200, 300, SEED + 15)[..., 1].astype(np.uint16) * 257 + 100
    return _save(Image.fromarray(gray), "PNG")


IMAGES: dict[str, tuple[Callable[[], bytes], str]] = {
    "rgb_landscape_640x427.jpg": (
        lambda: _save(Image.fromarray(_scene(640, 427, SEED + 1)), "JPEG", quality=88),
        "RGB JPEG, landscape, centre crop offset 55.5 rounds to even",
    ),
    "gray_portrait_300x451.png": (
        lambda: _save(Image.fromarray(_scene(300, 451, SEED + 2)[..., 0]), "PNG"),
        "grayscale (L) PNG, portrait",
    ),
    "palette_256x256.png": (_palette_png, "palette (P) PNG, square"),
    "cmyk_400x300.jpg": (
        lambda: _save(Image.fromarray(_scene(400, 300, SEED + 3)).convert("CMYK"), "JPEG", quality=90),
        "CMYK JPEG",
    ),
    "large_1600x1200.jpg": (
        lambda: _save(Image.fromarray(_scene(1600, 1200, SEED + 4)), "JPEG", quality=80),
        "large-ish RGB JPEG (strong downscale)",
    ),
    "small_100x150.png": (
        lambda: _save(Image.fromarray(_scene(100, 150, SEED + 5)), "PNG"),
        "smaller than 224 (upscale), portrait",
    ),
    "tiny_37x23.png": (
        lambda: _save(Image.fromarray(_scene(37, 23, SEED + 6)), "PNG"),
        "tiny, landscape (strong upscale)",
    ),
    "wide_720x160.png": (
        lambda: _save(Image.fromarray(_scene(720, 160, SEED + 7)), "PNG"),
        "wide (4.5:1)",
    ),
    "rgb_500x500.webp": (
        lambda: _save(Image.fromarray(_scene(500, 500, SEED + 8)), "WEBP", quality=85),
        "RGB WebP (lossy), square",
    ),
    "animated_320x240.gif": (_animated_gif, "animated GIF, 3 frames: the first is used"),
    "bitmap_160x120.bmp": (
        lambda: _save(Image.fromarray(_scene(160, 120, SEED + 9)), "BMP"),
        "BMP (uncompressed RGB)",
    ),
    "rgb_230x240.tiff": (
        lambda: _save(Image.fromarray(_scene(230, 240, SEED + 10)), "TIFF", compression="tiff_adobe_deflate"),
        "TIFF (deflate), nearly square, barely above 224",
    ),
    "exif_rotated_320x240.jpg": (_exif_rotated_jpeg, "EXIF orientation 6: we rotate, the reference does not"),
    "rgba_transparent_240x240.png": (_transparent_png, "RGBA: we composite on white, the reference drops alpha"),
    "palette_transparent_320x240.gif": (
        _palette_transparent_gif,
        "GIF with a transparent palette index: white here, the palette colour in the reference",
    ),
    "gray16_200x300.png": (_gray16_png, "16-bit grey PNG: we scale to 8 bits, the reference clips at 255"),
}

# ----------------------------------------------------------------------------- audio


def _signal(rate_hz: int, num_samples: int, channels: int, seed: int, dc: float = 0.0) -> np.ndarray:
    """(channels, samples) float in [-1, 1]: tones, a chirp, broadband noise and pauses.

    Broadband noise keeps every mel bin well above float32 rounding (a pure tone leaves
    bins 100 dB down where the reference's float32 FFT is noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / rate_hz
    out = []
    for ch in range(channels):
        f0 = 220.0 * (1.5**ch)
        x = 0.25 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3.01 * f0 * t + ch)
        x += 0.08 * np.sin(2 * np.pi * (300 + 1500 * t) * t)
        x += 0.05 * rng.standard_normal(num_samples)
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t + ch)
        out.append(envelope * x + dc)
    return np.clip(np.array(out), -1.0, 1.0)


def _wav(signal: np.ndarray, rate_hz: int) -> bytes:
    pcm = np.clip(np.rint(signal * 32767), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(signal.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(pcm.T.tobytes())
    return buf.getvalue()


def _wav_sample(rate_hz: int, num_samples: int, channels: int, seed: int, dc: float = 0.0) -> Callable[[], bytes]:
    return lambda: _wav(_signal(rate_hz, num_samples, channels, seed, dc), rate_hz)


WAVS: dict[str, tuple[Callable[[], bytes], str]] = {
    "tone_16k_1s_mono.wav": (_wav_sample(16000, 16000, 1, SEED + 31), "16 kHz mono, 1 s"),
    "exact_16k_2s_mono.wav": (_wav_sample(16000, 32000, 1, SEED + 32), "16 kHz mono, exactly 2 s (198 frames)"),
    "exact_16k_2s_stereo.wav": (_wav_sample(16000, 32000, 2, SEED + 33, dc=0.02), "16 kHz stereo with DC, exactly 2 s"),
    "noise_8k_1s_mono.wav": (_wav_sample(8000, 8000, 1, SEED + 34), "8 kHz mono (upsampled)"),
    "speech_22050_1500ms_mono.wav": (_wav_sample(22050, 33075, 1, SEED + 35), "22.05 kHz mono, 1.5 s"),
    "music_44100_1s_stereo.wav": (_wav_sample(44100, 44100, 2, SEED + 36), "44.1 kHz stereo, 1 s"),
    "music_48k_1250ms_mono.wav": (_wav_sample(48000, 60000, 1, SEED + 37), "48 kHz mono, 1.25 s"),
    "blip_16k_300samples.wav": (
        _wav_sample(16000, 300, 1, SEED + 38),
        "300 samples (< one 25 ms window): the reference crashes, we pad",
    ),
    "clips_16k_5s_mono.wav": (
        _wav_sample(16000, 80000, 1, SEED + 39, dc=0.05),
        "5 s with DC offset: overlapping clips at 0, 1.5, 3 s (official sampler), in-place de-meaning",
    ),
}


def _encode(container_format: str, codec: str, rate_hz: int, seconds: float, channels: int, seed: int) -> bytes:
    """Encode a test signal with PyAV (FFmpeg's encoders)."""
    signal = _signal(rate_hz, int(rate_hz * seconds), channels, seed).astype(np.float32)
    layout = "mono" if channels == 1 else "stereo"
    buf = io.BytesIO()
    # bitexact: no random Ogg serial numbers or Matroska UIDs, so reruns give the same bytes
    with av.open(buf, "w", format=container_format, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=rate_hz, layout=layout)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        stream.codec_context.bit_rate = 64_000 if codec != "flac" else 0
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate_hz)
        step = 1024
        for start in range(0, signal.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(signal[:, start : start + step]), format="fltp", layout=layout
            )
            frame.sample_rate = rate_hz
            frame.pts = start
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    container.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


ENCODED: dict[str, tuple[Callable[[], bytes], str]] = {
    "clip_44100_1s.mp3": (lambda: _encode("mp3", "libmp3lame", 44100, 1.0, 1, SEED + 41), "MP3 (LAME), 44.1 kHz mono"),
    "clip_22050_1s.flac": (lambda: _encode("flac", "flac", 22050, 1.0, 1, SEED + 42), "FLAC, 22.05 kHz mono"),
    "clip_44100_1s_vorbis.ogg": (
        lambda: _encode("ogg", "vorbis", 44100, 1.0, 2, SEED + 43),
        "Ogg Vorbis, 44.1 kHz stereo",
    ),
    "clip_48k_1s_opus.ogg": (lambda: _encode("ogg", "libopus", 48000, 1.0, 1, SEED + 44), "Ogg Opus, 48 kHz mono"),
    "clip_44100_1s_aac.m4a": (lambda: _encode("ipod", "aac", 44100, 1.0, 1, SEED + 45), "M4A (AAC), 44.1 kHz mono"),
    "clip_48k_1s_opus.webm": (
        lambda: _encode("webm", "libopus", 48000, 1.0, 2, SEED + 46),
        "WebM (Opus), 48 kHz stereo",
    ),
}

# ------------------------------------------------------------------------------ text

TEXTS: dict[str, str] = {
    "ascii": "A photo of a dog playing fetch in the park.",
    "mixed_case_punctuation": "WOW!!! It's 3:45pm -- we'll see... (maybe) #nofilter @friend",
    "accents": "Crème brûlée à la française, naïve café",
    "cjk": "一只猫坐在窗台上看雨。東京の夜景。서울의 밤",
    "emoji": "sunset at the beach 🌅🏖️ with friends 👨‍👩‍👧",
    "html_entities": "Tom &amp; Jerry &lt;3 &amp;amp; &quot;quoted&quot; &#39;x&#39;",
    "mojibake": "The Mona Lisa doesnâ€™t have eyebrows.",
    "whitespace": "  tabs\tand\nnew\r\nlines   and    spaces  ",
    "numbers": "Order 66 at 1999-12-31 costs $1,234.56 (or 3.14e10)",
    "long": " ".join(f"word{i} and another phrase number {i}" for i in range(40)),
    "empty": "",
}


def generate(out: Path) -> dict[str, dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = {}
    for kind, table in (("image", IMAGES), ("wav", WAVS), ("encoded_audio", ENCODED)):
        for name, (make, note) in table.items():
            (out / name).write_bytes(make())
            manifest[name] = {"kind": kind, "note": note}
    (out / "texts.json").write_text(json.dumps(TEXTS, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    manifest["texts.json"] = {"kind": "texts", "note": "tokenizer cases, name -> text"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    generate(args.out)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(list(args.out.iterdir()))} files, {total / 1024:.0f} KiB, to {args.out}")


if __name__ == "__main__":
    main()
