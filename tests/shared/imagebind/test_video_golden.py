"""Video against the reference itself: golden fixtures from Meta's
`imagebind.data.load_and_transform_video_data` (decoding with decord) and the reference model
in the tiny configuration, made by tools/golden/make_video_fixtures.py from the committed
sample videos (tests/fixtures/golden/video/samples/: H.264 MP4 landscape (down-scaled) and portrait,
VP9 WebM, a display-rotated MP4, 1.2 s, 12 s, one with an AAC track).

The fixtures keep the frames decord gave the reference, the reference tensor on a grid of
rows and columns plus per-clip mean/std, and the reference embeddings. The torch restatement
of the reference transform rebuilds the whole tensor from those frames exactly (checked on
the grid and the statistics), so our model can be given the reference tensors.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.imagebind.audio import preprocess_audio
from shared.imagebind.model import ImageBindModel
from shared.imagebind.normalize import normalize_video
from shared.imagebind.video import frames_to_clips, preprocess_video
from shared.media.video import VideoLimits
from tests.shared.imagebind.model_support import tiny_vision_model
from tests.shared.imagebind.test_preprocess_video import FIXED_POINT_TOLERANCE, reference_transform

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
GOLDEN = FIXTURES / "golden" / "video"
SAMPLES = FIXTURES / "golden" / "video" / "samples"
META = json.loads((GOLDEN / "meta.json").read_text())
NAMES = sorted(META["samples"])
GRID = np.array(META["grid"])
LIMITS = VideoLimits(
    max_duration_s=3600, max_pixels=40_000_000, max_fps=240, max_frames_decoded=5000, decode_budget_s=60
)
# The restatement runs the reference's own torch ops on the same frames: equal up to float
# summation order in the statistics.
RESTATEMENT_TOLERANCE = 1e-6
MODEL_TOLERANCE = 1e-5
# The audio track goes the audio uploads' way: the audio golden tests' tolerance.
AUDIO_TOLERANCE = 1e-3


@lru_cache(maxsize=1)
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "reference.npz") as data:
        return {key: data[key] for key in data.files}


def _get(name: str, key: str) -> np.ndarray:
    return golden()[f"{name.rsplit('.', 1)[0]}__{key}"]


def reference_frames(name: str) -> list[np.ndarray]:
    """The 10 frames decord gave the reference, in clip order (undoing the Sub filter)."""
    distinct = np.cumsum(_get(name, "frames_sub"), axis=2, dtype=np.uint8)
    return [distinct[slot] for slot in _get(name, "frame_slots")]


def reference_clips(name: str) -> list[list[np.ndarray]]:
    frames = reference_frames(name)
    return [frames[2 * c : 2 * c + 2] for c in range(5)]


@cache
def reference_tensor(name: str) -> torch.Tensor:
    """(15, 3, 2, 224, 224): the reference's output, rebuilt from its frames."""
    return reference_transform(reference_clips(name))


def _format(name: str) -> str:
    return "webm" if name.endswith(".webm") else "mp4"


@pytest.fixture(scope="module")
def vision_model() -> ImageBindModel:
    return tiny_vision_model()


def test_every_sample_video_is_small_and_has_its_golden() -> None:
    on_disk = sorted(path.name for path in SAMPLES.iterdir())
    assert on_disk == NAMES
    assert all(path.stat().st_size <= 200_000 for path in SAMPLES.iterdir())
    # portrait (coded), rotated by its display matrix (decord applies it, as we do), short, long
    shapes = META["decoded_frame_shapes"]
    assert shapes["h264_rotated_270_256x144_3s.mp4"][:2] == [256, 144]
    assert META["display_rotation"]["h264_rotated_270_256x144_3s.mp4"] == -90
    assert int(_get("h264_short_1200ms.mp4", "frame_count")) / float(_get("h264_short_1200ms.mp4", "fps")) < 2
    assert int(_get("h264_long_12s.mp4", "frame_count")) / float(_get("h264_long_12s.mp4", "fps")) > 10


@pytest.mark.parametrize("name", NAMES)
def test_the_restated_reference_rebuilds_the_reference_tensor(name: str) -> None:
    tensor = reference_tensor(name)
    grid = tensor[:, :, :, GRID][:, :, :, :, GRID].numpy()
    assert float(np.abs(grid - _get(name, "grid")).max()) <= RESTATEMENT_TOLERANCE
    stats = tensor.double()
    assert float(np.abs(stats.mean(dim=(3, 4)).numpy() - _get(name, "clip_mean")).max()) <= RESTATEMENT_TOLERANCE
    assert float(np.abs(stats.std(dim=(3, 4)).numpy() - _get(name, "clip_std")).max()) <= RESTATEMENT_TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_our_preprocessing_reproduces_the_reference(name: str) -> None:
    prepared = preprocess_video((SAMPLES / name).read_bytes(), format=_format(name), limits=LIMITS)
    info = prepared.frames.info
    # the same frame count and rate as decord reports, so the same clip placement and frames
    assert info.frame_count == int(_get(name, "frame_count")) and info.fps == float(_get(name, "fps"))
    assert [i for clip in prepared.clip_indices for i in clip] == _get(name, "frame_indices").tolist()
    # PyAV and decord decode these frames to the same RGB bytes (measured: 0 levels apart on all
    # seven samples, rotation included), so the only difference left is our uint16 wire form
    for index, frame in zip(_get(name, "frame_indices"), reference_frames(name), strict=True):
        np.testing.assert_array_equal(prepared.frames.frames[int(index)], frame)
    ours = normalize_video(torch.from_numpy(prepared.clips))
    assert float((ours - reference_tensor(name)).abs().max()) <= FIXED_POINT_TOLERANCE
    # and our transform alone, on the reference's own frames
    again = normalize_video(torch.from_numpy(frames_to_clips(reference_clips(name))))
    assert float((again - reference_tensor(name)).abs().max()) <= FIXED_POINT_TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_our_model_given_the_reference_tensors_reproduces_the_tiny_embeddings(
    name: str, vision_model: ImageBindModel
) -> None:
    with torch.inference_mode():
        raw = vision_model.embed_video(reference_tensor(name), [15])[0].numpy()
    np.testing.assert_allclose(raw, _get(name, "embed_raw"), rtol=0, atol=MODEL_TOLERANCE)
    unit = raw / np.linalg.norm(raw)
    np.testing.assert_allclose(unit, _get(name, "embed_unit"), rtol=0, atol=MODEL_TOLERANCE)
    # end to end: our decoding, preprocessing, uint16 wire form and model
    prepared = preprocess_video((SAMPLES / name).read_bytes(), format=_format(name), limits=LIMITS)
    with torch.inference_mode():
        ours = vision_model.embed_video(normalize_video(torch.from_numpy(prepared.clips)), [15])[0].numpy()
    np.testing.assert_allclose(ours, _get(name, "embed_raw"), rtol=0, atol=MODEL_TOLERANCE)


def test_the_audio_track_reproduces_the_reference_audio_preprocessing() -> None:
    name = "h264_aac_3s.mp4"
    ours = preprocess_audio((SAMPLES / name).read_bytes(), max_duration_s=60, format="mp4")
    reference = _get(name, "audio")
    assert ours.shape == reference.shape == (3, 1, 128, 204)
    assert float(np.abs(ours - reference).max()) <= AUDIO_TOLERANCE
