"""The real detectors (models shipped in their wheels), run on real inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from shared.errors import ConfigError
from shared.events import Modality
from shared.moderation.detectors import DecodedMedia, DetectorSet
from shared.moderation.detectors.labels import NUDENET_LABELS
from tests.shared.media.samples import SAMPLES

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "moderation"
ABUSIVE = "shut up you worthless idiot, nobody wants your stupid fucking opinion"
NEUTRAL = "The train to Lyon leaves at nine; please bring the blue folder."


@pytest.fixture(scope="module")
def detectors() -> DetectorSet:
    return DetectorSet(("nudenet", "profanity"))


def test_nudenet_detects_the_face_in_a_real_photo(detectors: DetectorSet) -> None:
    image = Image.open(FIXTURES / "astronaut_256.jpg").convert("RGB")
    (result,) = detectors.run(DecodedMedia(Modality.IMAGE, image=image))
    assert result.name == "nudenet" and result.error is None
    assert result.scores.get("FACE_FEMALE", 0.0) > 0.5
    assert set(result.scores) <= set(NUDENET_LABELS)


def test_nudenet_reports_nothing_for_a_landscape_and_handles_a_large_image(detectors: DetectorSet) -> None:
    for name in ("rgb_landscape_640x427.jpg", "large_1600x1200.jpg"):
        image = Image.open(SAMPLES / name).convert("RGB")
        (result,) = detectors.run(DecodedMedia(Modality.IMAGE, image=image))
        assert result.error is None
        assert all(score < 0.5 for score in result.scores.values()), (name, result.scores)


def test_text_classifier_flags_an_abusive_sentence_and_not_a_neutral_one(detectors: DetectorSet) -> None:
    (abusive,) = detectors.run(DecodedMedia(Modality.TEXT, text=ABUSIVE))
    (neutral,) = detectors.run(DecodedMedia(Modality.TEXT, text=NEUTRAL))
    assert abusive.scores["offensive"] > 0.9
    assert neutral.scores["offensive"] < 0.2


def test_detectors_apply_only_to_their_modality(detectors: DetectorSet) -> None:
    assert detectors.for_modality(Modality.IMAGE) == ("nudenet",)
    assert detectors.for_modality(Modality.TEXT) == ("profanity",)
    assert detectors.run(DecodedMedia(Modality.AUDIO)) == ()


def test_a_failing_detector_reports_its_error_instead_of_raising(detectors: DetectorSet) -> None:
    (result,) = detectors.run(DecodedMedia(Modality.IMAGE, image=None))
    assert result.scores == {} and result.error is not None and "decoded image" in result.error


def test_unknown_detector_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown detector"):
        DetectorSet(("telepathy",))


def test_detector_packages_are_imported_only_when_a_detector_first_runs() -> None:
    code = (
        "import sys\n"
        "from shared.moderation.detectors import DetectorSet\n"
        "from shared.moderation.policy import load_policy\n"
        "load_policy(); s = DetectorSet(('nudenet', 'profanity'))\n"
        "heavy = {'nudenet', 'onnxruntime', 'cv2', 'profanity_check', 'sklearn'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_nudenet_scores_equal_the_librarys_own_detector_on_the_same_pixels(detectors: DetectorSet) -> None:
    import numpy as np
    from nudenet import NudeDetector

    library = NudeDetector()
    for path in (FIXTURES / "astronaut_256.jpg", SAMPLES / "rgb_landscape_640x427.jpg"):
        image = Image.open(path).convert("RGB")
        (ours,) = detectors.run(DecodedMedia(Modality.IMAGE, image=image))
        theirs: dict[str, float] = {}
        for found in library.detect(np.ascontiguousarray(np.asarray(image)[:, :, ::-1])):
            theirs[found["class"]] = max(theirs.get(found["class"], 0.0), found["score"])
        assert ours.scores == pytest.approx(theirs)
