from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from shared.errors import CorruptMedia, LimitExceeded
from shared.media.image import decode_image, to_rgb
from tests.shared.media.samples import read_sample, sample_names

LIMIT = 64_000_000


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height but holds one empty IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name", sample_names("image"))
def test_every_sample_decodes_to_rgb(name: str) -> None:
    image = decode_image(read_sample(name), max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert min(image.size) > 0


def test_exif_orientation_is_applied() -> None:
    image = decode_image(read_sample("exif_rotated_320x240.jpg"), max_pixels=LIMIT)
    assert image.size == (240, 320)  # stored 320x240, orientation 6 = rotate 90° clockwise


def test_transparency_is_composited_on_white() -> None:
    image = np.asarray(decode_image(read_sample("rgba_transparent_240x240.png"), max_pixels=LIMIT))
    assert (image[:40] == 255).all()  # the fully transparent band is black underneath
    palette = np.asarray(decode_image(read_sample("palette_transparent_320x240.gif"), max_pixels=LIMIT))
    assert (palette[100:140, 50:270] == 255).all()  # the transparent palette index


def test_animated_image_gives_its_first_frame() -> None:
    data = read_sample("animated_320x240.gif")
    with Image.open(io.BytesIO(data)) as gif:
        first = np.asarray(gif.convert("RGB"))
        gif.seek(1)
        second = np.asarray(gif.convert("RGB"))
    decoded = np.asarray(decode_image(data, max_pixels=LIMIT))
    assert np.array_equal(decoded, first)
    assert not np.array_equal(decoded, second)


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    grey16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # 0..65535
    decoded = np.asarray(decode_image(_encode(Image.fromarray(grey16), "PNG"), max_pixels=LIMIT))
    assert np.array_equal(decoded[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"])
def test_every_pillow_mode_becomes_rgb(mode: str) -> None:
    image = to_rgb(Image.new(mode, (5, 4)))
    assert image.mode == "RGB" and image.size == (5, 4)


def test_a_header_claiming_100k_by_100k_is_refused_before_decoding() -> None:
    with pytest.raises(LimitExceeded) as err:
        decode_image(_png_claiming(100_000, 100_000), max_pixels=LIMIT)
    assert err.value.reason == "too_many_pixels"


def test_pixel_limit_is_inclusive() -> None:
    data = _encode(Image.new("RGB", (300, 200)), "PNG")
    assert decode_image(data, max_pixels=60_000).size == (300, 200)
    with pytest.raises(LimitExceeded):
        decode_image(data, max_pixels=59_999)


def test_giant_gif_screen_trips_the_limit_too() -> None:
    gif = bytearray(_encode(Image.new("P", (4, 4)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen size
    with pytest.raises(LimitExceeded):
        decode_image(bytes(gif), max_pixels=LIMIT)


@pytest.mark.parametrize(
    ("name", "keep"),
    [("rgb_landscape_640x427.jpg", 0.5), ("small_100x150.png", 0.5), ("rgb_500x500.webp", 0.3)],
)
def test_truncated_images_are_corrupt(name: str, keep: float) -> None:
    data = read_sample(name)
    with pytest.raises(CorruptMedia) as err:
        decode_image(data[: int(len(data) * keep)], max_pixels=LIMIT)
    assert err.value.reason == "corrupt_image"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"\xff\xd8\xff" + bytes(range(256)), b"not an image at all"],
    ids=["empty", "png-magic-only", "jpeg-magic-garbage", "text"],
)
def test_unreadable_bytes_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptMedia) as err:
        decode_image(data, max_pixels=LIMIT)
    assert err.value.reason == "corrupt_image"


def test_only_accepted_formats_are_tried() -> None:
    ico = _encode(Image.new("RGB", (16, 16)), "ICO")  # Pillow reads ICO, we do not accept it
    with pytest.raises(CorruptMedia):
        decode_image(ico, max_pixels=LIMIT)


def test_a_sniffed_format_is_the_only_one_tried() -> None:
    png = read_sample("tiny_37x23.png")
    assert decode_image(png, max_pixels=LIMIT, format="png").size == (37, 23)
    with pytest.raises(CorruptMedia):
        decode_image(png, max_pixels=LIMIT, format="jpeg")
