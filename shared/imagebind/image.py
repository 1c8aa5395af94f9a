"""Image -> ImageBind vision input, as the reference does it.

The reference (`imagebind.data.load_and_transform_vision_data`) runs torchvision's
``Resize(224, BICUBIC)`` and ``CenterCrop(224)`` on a Pillow image, then ``ToTensor`` and
``Normalize``. We do the same arithmetic with Pillow alone and stop before normalising:
the uint8 (3, 224, 224) array is what travels to the GPU (150 KB instead of 600 KB), where
`shared.imagebind.normalize.normalize_image` finishes the job bit for bit like the
reference. No torch here: the cpu worker's pool processes run this module.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from shared.imagebind.constants import IMAGE_SIZE
from shared.media.image import decode_image


def preprocess_image(data: bytes, *, max_pixels: int, format: str | None = None) -> np.ndarray:
    """Image upload bytes -> uint8 array (3, 224, 224), RGB, channels first.

    `max_pixels` bounds both the decoded image and the resized intermediate; `format` is
    the sniffed format name, if known. Raises what `shared.media.image.decode_image` raises.
    """
    image = decode_image(data, max_pixels=max_pixels, format=format)
    return resize_and_center_crop(image, max_resized_pixels=max_pixels)


def resized_size(width: int, height: int, short_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """(width, height) after torchvision's ``Resize(short_side)``: the shorter side becomes
    `short_side`, the longer one ``int(short_side * long / short)`` (truncated)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = short_side, int(short_side * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop_origin(width: int, height: int, crop: int = IMAGE_SIZE) -> tuple[int, int]:
    """(left, top) of torchvision's ``CenterCrop(crop)``, whose ``round`` is Python's
    (halves to even)."""
    return round((width - crop) / 2.0), round((height - crop) / 2.0)


def resize_and_center_crop(image: Image.Image, *, max_resized_pixels: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """RGB image -> uint8 (3, size, size): bicubic resize of the shorter side to `size`,
    then the centre square.

    The resize is exactly the reference's (Pillow resizes the whole image, then we crop)
    unless the resized image would exceed `max_resized_pixels`: only very elongated images
    (aspect ratio above max_resized_pixels / size², 1275:1 at the default 64 MP) get there,
    and they are resized region-only with Pillow's ``box`` (see `_resize_center_region`).
    """
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    new_width, new_height = resized_size(*image.size, short_side=size)
    left, top = center_crop_origin(new_width, new_height, size)
    if new_width * new_height <= max_resized_pixels:
        resized = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
        cropped = resized.crop((left, top, left + size, top + size))
    else:
        cropped = _resize_center_region(image, (new_width, new_height), (left, top), size)
    # (H, W, 3) -> (3, H, W)
    return np.ascontiguousarray(np.asarray(cropped, dtype=np.uint8).transpose(2, 0, 1))


def _resize_center_region(
    image: Image.Image, resized: tuple[int, int], origin: tuple[int, int], size: int
) -> Image.Image:
    """Resize only the part of `image` that the centre crop keeps.

    Pillow's ``box`` maps a source rectangle onto the output; the filter's reach beyond
    that rectangle is kept by cutting the source with a margin first (so the edges see the
    same neighbours as in a full resize). Filter weights are computed from slightly
    different floating-point offsets, so pixels may differ from the full resize by a grey
    level or two; the full resize of such an image would need more memory than the limit.
    """
    width, height = image.size
    scale_x, scale_y = width / resized[0], height / resized[1]
    x0, y0 = origin[0] * scale_x, origin[1] * scale_y
    x1, y1 = (origin[0] + size) * scale_x, (origin[1] + size) * scale_y
    # Bicubic support is 2 output pixels, i.e. 2 * scale source pixels when shrinking.
    margin_x, margin_y = math.ceil(2 * max(scale_x, 1.0)) + 1, math.ceil(2 * max(scale_y, 1.0)) + 1
    cut_x0, cut_y0 = max(math.floor(x0) - margin_x, 0), max(math.floor(y0) - margin_y, 0)
    cut_x1, cut_y1 = min(math.ceil(x1) + margin_x, width), min(math.ceil(y1) + margin_y, height)
    region = image.crop((cut_x0, cut_y0, cut_x1, cut_y1))
    box = (x0 - cut_x0, y0 - cut_y0, x1 - cut_x0, y1 - cut_y0)
    return region.resize((size, size), Image.Resampling.BICUBIC, box=box)
