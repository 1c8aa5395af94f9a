from __future__ import annotations

import codecs
import io
import struct

import pytest
from PIL import Image

from shared.errors import CorruptMedia, UnsupportedMedia
from shared.events import Modality
from shared.media.sniff import sniff
from tests.shared.media.samples import read_sample, sample_names

EXPECTED_FORMAT = {
    ".jpg": "jpeg",
    ".png": "png",
    ".gif": "gif",
    ".webp": "webp",
    ".bmp": "bmp",
    ".tiff": "tiff",
    ".wav": "wav",
    ".mp3": "mp3",
    ".flac": "flac",
    ".ogg": "ogg",
    ".m4a": "mp4",
    ".webm": "webm",
}


@pytest.mark.parametrize("name", sample_names("image") + sample_names("wav") + sample_names("encoded_audio"))
def test_every_sample_is_recognised_by_its_content(name: str) -> None:
    expected = EXPECTED_FORMAT["." + name.rsplit(".", 1)[1]]
    sniffed = sniff(read_sample(name))
    assert sniffed.format == expected
    assert sniffed.modality is (Modality.IMAGE if sniffed.mime.startswith("image/") else Modality.AUDIO)
    assert not sniffed.mismatch


def test_zero_bytes_have_their_own_reason() -> None:
    with pytest.raises(CorruptMedia) as err:
        sniff(b"", "image/png")
    assert err.value.reason == "empty_file"


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)) * 4,  # binary garbage
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",  # HEIF still image
        b"hello\x00world",  # valid UTF-8 but with a NUL: binary
    ],
    ids=["garbage", "pdf", "zip", "heic", "nul"],
)
def test_unknown_content_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMedia) as err:
        sniff(data)
    assert err.value.reason == "unsupported_format"


def test_plain_text_in_utf8_and_with_byte_order_marks_is_text() -> None:
    text = "Ein Bär 🐻 on the 東京 skyline\n"
    for data in (
        text.encode(),
        codecs.BOM_UTF8 + text.encode(),
        codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
    ):
        sniffed = sniff(data, "text/plain; charset=utf-8")
        assert (sniffed.modality, sniffed.format, sniffed.mime, sniffed.mismatch) == (
            Modality.TEXT,
            "text",
            "text/plain",
            False,
        )


def test_short_utf16_text_is_not_taken_for_an_mp3_frame() -> None:
    # FF FE (the UTF-16LE mark) also reads as an MPEG-1 layer I frame sync.
    assert sniff(codecs.BOM_UTF16_LE + "Hi".encode("utf-16-le")).format == "text"


def test_text_starting_like_a_bitmap_is_still_text() -> None:
    assert sniff(b"BMW is a car maker from Munich, founded in 1916.").format == "text"


def test_latin1_bytes_are_not_text() -> None:
    with pytest.raises(UnsupportedMedia):
        sniff("café crème".encode("latin-1"))


def test_declared_type_naming_another_format_is_a_mismatch() -> None:
    png = read_sample("small_100x150.png")
    assert sniff(png, "image/jpeg").mismatch
    assert sniff(png, "audio/wav").mismatch
    assert sniff(read_sample("tone_16k_1s_mono.wav"), "text/plain").mismatch


@pytest.mark.parametrize("declared", [None, "image/jpeg", "image/jpg", "IMAGE/JPEG; q=1", "application/octet-stream"])
def test_declared_aliases_and_generic_types_are_not_a_mismatch(declared: str | None) -> None:
    assert not sniff(read_sample("rgb_landscape_640x427.jpg"), declared).mismatch


def test_video_container_types_fit_audio_in_them() -> None:
    assert not sniff(read_sample("clip_48k_1s_opus.webm"), "video/webm").mismatch
    assert not sniff(read_sample("clip_44100_1s_aac.m4a"), "video/mp4").mismatch


def test_a_polyglot_is_what_its_first_bytes_say() -> None:
    png = read_sample("tiny_37x23.png")
    assert sniff(png + read_sample("tone_16k_1s_mono.wav")).format == "png"


def _png_header(width: int, height: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_a_png_header_is_enough_to_sniff() -> None:
    assert sniff(_png_header(100_000, 100_000)).format == "png"


def test_id3_tag_before_mp3_frames_and_before_flac() -> None:
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"TIT2\x00\x00\x00\x00\x00\x00"
    mp3 = read_sample("clip_44100_1s.mp3")
    assert mp3.startswith(b"ID3")  # LAME via FFmpeg writes a tag already
    assert sniff(tag + read_sample("clip_22050_1s.flac")).format == "flac"


def test_mp3_frame_sync_without_a_second_frame_is_not_mp3() -> None:
    with pytest.raises(UnsupportedMedia):
        sniff(b"\xff\xfb\x90\x64" + b"\x55" * 1000)


def test_matroska_and_webm_are_told_apart_by_doctype() -> None:
    ebml = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska\x42\x87\x81\x04"
    assert sniff(ebml).format == "matroska"
    assert sniff(read_sample("clip_48k_1s_opus.webm")).format == "webm"


def test_bmp_needs_a_plausible_header() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buf, "BMP")
    assert sniff(buf.getvalue()).format == "bmp"
    broken = bytearray(buf.getvalue())
    broken[14:18] = (999).to_bytes(4, "little")  # no such info-header size
    with pytest.raises(UnsupportedMedia):
        sniff(bytes(broken))
