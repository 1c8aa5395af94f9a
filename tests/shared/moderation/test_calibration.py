from __future__ import annotations

from shared.events import Modality
from shared.moderation.calibration import LabelledScores, precision_recall


def test_precision_and_recall_at_each_threshold_per_category_and_modality() -> None:
    examples = [
        LabelledScores("violence", Modality.IMAGE, {"violence": 0.9}),
        LabelledScores("violence", Modality.IMAGE, {"violence": 0.6}),
        LabelledScores("safe", Modality.IMAGE, {"violence": 0.7}),
        LabelledScores("safe", Modality.IMAGE, {"violence": 0.1}),
        LabelledScores("spam", Modality.IMAGE, {"violence": 0.2}),
        LabelledScores("violence", Modality.AUDIO, {"violence": 0.4}),
    ]
    curves = {(c.category, c.modality): c for c in precision_recall(examples, thresholds=[0.5, 0.8])}
    image = curves[("violence", Modality.IMAGE)]
    assert (image.positives, image.negatives) == (2, 3)
    at_half, at_high = image.points
    assert (at_half.precision, at_half.recall) == (2 / 3, 1.0)
    assert (at_high.precision, at_high.recall) == (1.0, 0.5)
    audio = curves[("violence", Modality.AUDIO)]
    assert audio.points[0].precision is None and audio.points[0].recall == 0.0
    assert ("spam", Modality.IMAGE) not in curves, "spam has no score in these examples"
