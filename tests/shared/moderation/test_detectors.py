"""The real detectors (models shipped in their wheels), run on real inputs."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from shared.errors import ConfigError
from shared.events import Modality
from shared.imagebind.video import preprocess_video
from shared.media.decoded import DecodedMedia
from shared.media.video import VideoLimits
from shared.moderation.detectors import DetectorResult, DetectorSet
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


def _sampled_frames(data: bytes) -> DecodedMedia:
    """A video's frames as ImageBind samples them, as the CPU stage hands them to detectors."""
    decoded = preprocess_video(data, format="mp4", limits=VideoLimits(3600, 40_000_000, 240, 3000, 60)).frames
    return DecodedMedia(Modality.VIDEO, frames=tuple((decoded.times_s[i], decoded.frames[i]) for i in decoded.frames))


def _video_of(images: list[tuple[np.ndarray, int]], fps: int = 10) -> bytes:
    """An H.264 MP4 showing each (RGB image, frame count) in turn."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        height, width = images[0][0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for rgb, count in images:
            for _ in range(count):
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_nudenet_runs_on_a_videos_sampled_frames_and_the_worst_frame_wins_with_its_time(
    detectors: DetectorSet,
) -> None:
    face = np.asarray(Image.open(FIXTURES / "astronaut_256.jpg").convert("RGB"))
    landscape = np.asarray(Image.open(SAMPLES / "rgb_landscape_640x427.jpg").convert("RGB").resize((256, 256)))
    # 10 s at 10 fps: the face only from 4.0 to 5.9 s (the third of ImageBind's 5 clips)
    data = _video_of([(landscape, 40), (face, 20), (landscape, 40)])
    media = _sampled_frames(data)
    assert len(media.frames) == 10
    assert detectors.for_modality(Modality.VIDEO) == ("nudenet",)
    (result,) = detectors.run(media)
    assert result.error is None and result.scores.get("FACE_FEMALE", 0.0) > 0.5
    assert result.at_s["FACE_FEMALE"] in (4.0, 5.9)
    assert set(result.at_s) == set(result.scores)
    # the frame alone scores what the video reports for it
    (alone,) = detectors.run(DecodedMedia(Modality.IMAGE, image=Image.fromarray(dict(media.frames)[4.0])))
    assert result.scores["FACE_FEMALE"] >= alone.scores["FACE_FEMALE"]
    assert DetectorResult.from_wire(result.to_wire()) == result
    # a video of landscapes only: nothing
    (quiet,) = detectors.run(_sampled_frames(_video_of([(landscape, 30)])))
    assert all(score < 0.5 for score in quiet.scores.values()), quiet.scores
