"""Video through our model, on the reference's tiny weights: the official Conv3d over two real
frames, the reference's reduction of 15 clips (unit-norm per clip, then the mean, not
re-normalised), and the Embedder's uint16 wire form. Anchored to the golden-tested image path:
a clip of two identical frames is a still image (the reference's PadIm2Video repeats it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.config import ModelSettings
from shared.errors import PermanentError
from shared.events import Modality
from shared.imagebind.config import TINY
from shared.imagebind.embed import Embedder
from shared.imagebind.model import ImageBindModel
from shared.imagebind.normalize import normalize_video
from tests.shared.imagebind.model_support import TINY_STATE_DICT, tiny_vision_model

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def vision_model() -> ImageBindModel:
    return tiny_vision_model()


def _clips(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, 2, 224, 224, generator=torch.Generator().manual_seed(seed))


def test_a_clip_of_two_identical_frames_embeds_as_the_still_image(vision_model: ImageBindModel) -> None:
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    clips = images.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # (B, 3, 2, H, W)
    with torch.inference_mode():
        torch.testing.assert_close(
            vision_model.embed_video(clips), vision_model.embed_vision(images), rtol=0, atol=TOLERANCE
        )


def test_the_stem_runs_the_official_conv3d_over_two_different_frames(vision_model: ImageBindModel) -> None:
    stem = vision_model.modality_preprocessors["vision"].rgbt_stem
    clips = _clips(2, 4)
    expected = F.conv3d(clips, stem.proj[1].weight, stride=(2, 14, 14)).flatten(2).transpose(1, 2)
    with torch.inference_mode():
        torch.testing.assert_close(stem(clips), expected, rtol=0, atol=TOLERANCE)
    # and the two frames matter: swapping them changes the tokens
    with torch.inference_mode():
        assert float((stem(clips.flip(2)) - expected).abs().max()) > 1e-3


def test_fifteen_clips_are_averaged_after_per_clip_normalisation(vision_model: ImageBindModel) -> None:
    clips = _clips(30, 5)
    with torch.inference_mode():
        per_clip = vision_model.embed_video(clips)
        averaged = vision_model.embed_video(clips, [15, 15])
        as_reference = vision_model({"vision": clips.unflatten(0, (2, 15))})["vision"]  # (B, S, 3, T, H, W)
    assert torch.allclose(per_clip.norm(dim=-1), torch.ones(30), atol=1e-5)
    torch.testing.assert_close(averaged, per_clip.unflatten(0, (2, 15)).mean(dim=1), rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(as_reference, averaged, rtol=0, atol=TOLERANCE)
    assert float(averaged.norm(dim=-1).max()) < 1.0  # a mean of unit vectors, not re-normalised


def test_embedder_takes_uint16_clips_and_returns_unit_vectors(tmp_path: Path, vision_model: ImageBindModel) -> None:
    settings = ModelSettings(name="tiny", checkpoint=TINY_STATE_DICT, cache_dir=tmp_path, device="cpu")
    embedder = Embedder.from_settings(settings, modalities=("video",))
    assert embedder.modalities == frozenset({Modality.IMAGE, Modality.VIDEO})
    rng = np.random.default_rng(6)
    fixed = rng.integers(0, 65536, (2, 15, 3, 2, 224, 224), dtype=np.uint16)
    out = embedder.embed({Modality.VIDEO: fixed})[Modality.VIDEO]
    with torch.inference_mode():
        expected = vision_model.embed_video(normalize_video(torch.from_numpy(fixed)).flatten(0, 1), [15, 15])
    expected = F.normalize(expected, dim=-1).numpy()
    assert out.shape == (2, TINY.out_dim) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=TOLERANCE)
    # a list of per-item arrays (varying clip counts) gives the same per item
    single = embedder.embed({Modality.VIDEO: [fixed[0], fixed[1][:5]]})[Modality.VIDEO]
    np.testing.assert_allclose(single[0], expected[0], atol=TOLERANCE)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((1, 15, 3, 2, 224, 224), np.uint8),
        np.zeros((1, 15, 3, 1, 224, 224), np.uint16),
        np.zeros((15, 3, 2, 224, 224), np.uint16),
    ],
    ids=["uint8", "one-frame", "5-d"],
)
def test_embedder_refuses_malformed_video_input(tmp_path: Path, bad: np.ndarray) -> None:
    settings = ModelSettings(name="tiny", checkpoint=TINY_STATE_DICT, cache_dir=tmp_path, device="cpu")
    embedder = Embedder.from_settings(settings, modalities=("video",))
    with pytest.raises(PermanentError) as caught:
        embedder.embed({Modality.VIDEO: bad})
    assert caught.value.reason == "invalid_model_input"


def test_fixed_point_clips_normalise_the_same_from_their_int16_bits() -> None:
    fixed = (
        torch.from_numpy(np.array([0, 1, 32767, 32768, 65534, 65535], dtype=np.uint16))
        .view(1, 6, 1, 1)
        .repeat(3, 1, 1, 1)
    )
    direct = (
        fixed.to(torch.int32).to(torch.float32) / 65535
        - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1, 1)
    ) / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1, 1)
    torch.testing.assert_close(normalize_video(fixed), direct, rtol=0, atol=1e-6)
    torch.testing.assert_close(normalize_video(fixed.view(torch.int16)), direct, rtol=0, atol=1e-6)
