"""Image preprocessing equals the reference (golden fixtures from Meta's `imagebind.data`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import CorruptMedia, LimitExceeded
from shared.imagebind.image import (
    center_crop_origin,
    preprocess_image,
    resize_and_center_crop,
    resized_size,
)
from shared.imagebind.normalize import normalize_image, preprocess_image_normalized
from tests.shared.media.samples import GOLDEN, read_sample, sample_names

LIMIT = 64_000_000


@pytest.fixture(scope="module")
def golden_images() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "images_uint8.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.mark.parametrize("name", sample_names("image"))
def test_image_matches_the_reference(name: str, golden_images: dict[str, np.ndarray]) -> None:
    reference = normalize_image(torch.from_numpy(golden_images[name]))
    ours = preprocess_image_normalized(read_sample(name), max_pixels=LIMIT)
    assert ours.dtype == torch.float32 and ours.shape == (3, 224, 224)
    assert float((ours - reference).abs().max()) <= 1e-5


def test_compact_form_is_uint8_channels_first() -> None:
    pixels = preprocess_image(read_sample("rgb_landscape_640x427.jpg"), max_pixels=LIMIT)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 224, 224) and pixels.flags.c_contiguous


def test_every_golden_image_is_covered(golden_images: dict[str, np.ndarray]) -> None:
    assert sorted(golden_images) == sample_names("image")


@pytest.mark.parametrize(
    ("size", "resized", "origin"),
    [
        ((640, 427), (335, 224), (56, 0)),  # (335 - 224) / 2 = 55.5 rounds to even
        ((337, 224), (337, 224), (56, 0)),  # 56.5 rounds to even too
        ((300, 451), (224, 336), (0, 56)),
        ((100, 150), (224, 336), (0, 56)),
        ((37, 23), (360, 224), (68, 0)),
        ((224, 224), (224, 224), (0, 0)),
    ],
)
def test_resize_and_crop_geometry_is_torchvisions(
    size: tuple[int, int], resized: tuple[int, int], origin: tuple[int, int]
) -> None:
    assert resized_size(*size) == resized
    assert center_crop_origin(*resized) == origin


def test_very_elongated_images_are_resized_region_only_and_stay_close() -> None:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:40, 0:3000]
    pixels = np.stack([(xx * 3) % 256, (yy * 6) % 256, np.full_like(xx, 128)], -1) + rng.integers(0, 8, (40, 3000, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    exact = resize_and_center_crop(image, max_resized_pixels=10**9)  # 16800 x 224 intermediate
    bounded = resize_and_center_crop(image, max_resized_pixels=224 * 224)
    assert bounded.shape == (3, 224, 224)
    assert np.abs(exact.astype(int) - bounded.astype(int)).max() <= 2


def test_errors_come_through_as_ours() -> None:
    with pytest.raises(CorruptMedia):
        preprocess_image(b"\x89PNG\r\n\x1a\n broken", max_pixels=LIMIT)
    with pytest.raises(LimitExceeded):
        preprocess_image(read_sample("large_1600x1200.jpg"), max_pixels=1_000_000)
