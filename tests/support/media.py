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


def frame_level(index: int) -> int:
    """The grey level `video_bytes` paints frame `index` with (distinct for 0..49, far apart
    enough to survive lossy coding)."""
    return 10 + (index * 5) % 240


def video_bytes(  # noqa: C901 - one flat recipe with its options
    *,
    seconds: float = 3.0,
    fps: int = 10,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    container: str = "mp4",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    rotation: int | None = None,
    audio_streams: int = 0,
    frames: int | None = None,
    options: dict[str, str] | None = None,
) -> bytes:
    """A small video made with PyAV: frame i is uniformly grey at `frame_level(i)` with a white
    square in its top-left quarter (shows rotation). `gop`: keyframe interval in frames;
    `rotation`: display matrix, degrees counter-clockwise; `audio_streams` sine tracks."""
    import av

    count = frames if frames is not None else round(seconds * fps)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        opts = {"crf": "1"} if codec == "libx264" else {}
        opts.update(options or {})
        stream.options = opts
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = []
        for _ in range(audio_streams):
            track = out.add_stream("aac", rate=16000)
            track.layout = "mono"
            audio.append(track)
        for i in range(count):
            pixels = np.full((height, width, 3), frame_level(i), np.uint8)
            pixels[: height // 4, : width // 4] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        samples_total = int(count / fps * 16000)
        for track in audio:
            t = np.arange(samples_total, dtype=np.float32) / 16000
            wave_ = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, samples_total, 1024):
                chunk = wave_[start : start + 1024].reshape(1, -1)
                aframe = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                aframe.sample_rate = 16000
                for packet in track.encode(aframe):
                    out.mux(packet)
            for packet in track.encode():
                out.mux(packet)
    return buf.getvalue()


def subtitle_only_mkv() -> bytes:
    """A Matroska file whose only stream is an ASS subtitle (one line), made with PyAV."""
    from fractions import Fraction

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("ass")
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        packet = av.Packet(b"0,0,Default,,0,0,0,,hello")
        packet.stream, packet.pts, packet.dts, packet.duration = stream, 0, 0, 1000
        out.mux(packet)
    return buf.getvalue()


def video_with_sound(*, seconds: float, rate_hz: int, layout: str = "mono", fps: int = 2) -> bytes:
    """An MP4: a tiny H.264 picture at `fps` and an AAC track at `rate_hz` (a rising tone over
    noise, the second channel a different signal), `seconds` long."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream("aac", rate=rate_hz)
        audio.layout = layout
        for i in range(round(seconds * fps)):
            pixels = np.full((32, 32, 3), frame_level(i), np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        total = int(seconds * rate_hz)
        t = np.arange(total) / rate_hz
        tone = 0.3 * np.sin(2 * np.pi * (200 + 20 * t) * t) + 0.05 * np.random.default_rng(0).normal(size=total)
        channels = np.stack([tone, 0.5 * tone[::-1]][: 2 if layout == "stereo" else 1]).astype(np.float32)
        for start in range(0, total, 1024):
            chunk = np.ascontiguousarray(channels[:, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate_hz
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return buf.getvalue()
