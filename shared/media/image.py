"""Image upload bytes -> an RGB Pillow image, safely.

- Only the formats we accept are ever tried (never Pillow's whole plugin list: EPS would
  start Ghostscript), and a sniffed format is the only one tried.
- The pixel count comes from the header, which `Image.open` reads lazily, and is checked
  before a single pixel is decoded (decompression bombs).
- Animated images give their first frame; EXIF orientation is applied; every mode ends as
  RGB, with transparency composited on white (a transparent logo on black would be
  another picture).
"""

from __future__ import annotations

import io
import logging
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import CorruptMedia, LimitExceeded, UnsupportedMedia
from shared.events import Modality
from shared.media.sniff import FORMATS

log = logging.getLogger(__name__)

PILLOW_FORMATS: tuple[str, ...] = tuple(
    f.pillow_format for f in FORMATS.values() if f.modality is Modality.IMAGE and f.pillow_format
)
# What Pillow raises on malformed input besides its own error types: parsers index into
# short buffers, unpack structs and inflate zlib streams.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error, zlib.error)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_WHITE = (255, 255, 255, 255)


def decode_image(data: bytes, *, max_pixels: int, format: str | None = None) -> Image.Image:
    """Decode an image upload to RGB.

    Takes the raw bytes, the largest width x height accepted, and optionally the sniffed
    format name (a key of `shared.media.sniff.FORMATS`); without it every accepted image
    format is tried. Returns a loaded RGB image, EXIF orientation applied, first frame of
    an animation, transparency composited on white.

    Raises `LimitExceeded` (``too_many_pixels``) when the header announces more than
    `max_pixels`, `CorruptMedia` (``corrupt_image``) for data Pillow cannot read as the
    format, `UnsupportedMedia` (``unsupported_image_mode``) for pixel modes with no RGB
    meaning.
    """
    image = open_image(data, max_pixels=max_pixels, format=format)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise LimitExceeded(str(exc), reason="too_many_pixels") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptMedia(f"cannot decode {image.format} image: {exc}", reason="corrupt_image") from exc
    return to_rgb(_apply_exif_orientation(image))


def open_image(data: bytes, *, max_pixels: int, format: str | None = None) -> Image.Image:
    """Parse the header only (no pixels decoded) and enforce the pixel limit.

    Same arguments and errors as `decode_image`; returns the lazily opened image.
    """
    formats = [FORMATS[format].pillow_format or ""] if format is not None else list(PILLOW_FORMATS)
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (twice Image.MAX_IMAGE_PIXELS) fired before ours could.
        raise LimitExceeded(str(exc), reason="too_many_pixels") from exc
    except UnidentifiedImageError as exc:
        expected = format or "/".join(PILLOW_FORMATS)
        raise CorruptMedia(f"not a readable {expected} image", reason="corrupt_image") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptMedia(f"cannot read the image header: {exc}", reason="corrupt_image") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise LimitExceeded(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}", reason="too_many_pixels"
        )
    if width == 0 or height == 0:
        raise CorruptMedia(f"image has no pixels ({width}x{height})", reason="corrupt_image")
    return image


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    # Broken EXIF is common (editors, messengers) and says nothing about the pixels, so
    # the image is kept as stored rather than refused.
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as exc:
        log.warning("ignoring unreadable EXIF orientation: %s", exc)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha (and palette/colour-key transparency) composited on
    white; 16-bit and 32-bit grey scaled to 8 bits (Pillow's own conversion clips them at
    255, turning most of a 16-bit picture white); float grey read as 0..1."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey16 = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray((grey16 >> 8).astype(np.uint8))
    elif image.mode == "F":
        unit = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0.0, 1.0)
        image = Image.fromarray(np.rint(unit * 255.0).astype(np.uint8))
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
        return image if image.mode == "RGB" else image.convert("RGB")
    except ValueError as exc:
        raise UnsupportedMedia(f"cannot convert {image.mode} pixels to RGB", reason="unsupported_image_mode") from exc
