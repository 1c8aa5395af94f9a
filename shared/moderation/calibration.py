"""Choosing thresholds from labelled examples (pure; ``omnibind calibrate`` does the I/O).

A labelled folder holds one subfolder per category (named like the policy's categories)
plus ``safe``. For category c, the examples in ``c/`` are positives and every other
example of the same modality is a negative (``safe/`` and the other categories alike).
At each candidate threshold t, "score >= t" is the prediction:

    precision(t) = TP / (TP + FP)      recall(t) = TP / (TP + FN)

Pick the review threshold where recall is still high enough for your reviewers' queue,
and the block threshold where precision is high enough to act without a human.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.events import Modality

SAFE_LABEL = "safe"
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass(frozen=True, slots=True)
class LabelledScores:
    """One labelled example: its folder label, modality and zero-shot scores per category."""

    label: str
    modality: Modality
    scores: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ThresholdStats:
    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float | None:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else None

    @property
    def recall(self) -> float | None:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else None


@dataclass(frozen=True, slots=True)
class CategoryCurve:
    category: str
    modality: Modality
    positives: int
    negatives: int
    points: tuple[ThresholdStats, ...]


def precision_recall(
    examples: Sequence[LabelledScores], thresholds: Iterable[float] = DEFAULT_THRESHOLDS
) -> list[CategoryCurve]:
    """One curve per (category, modality) that has at least one positive example and a
    score for it."""
    cuts = sorted(set(thresholds))
    curves = []
    pairs = sorted({(e.label, e.modality) for e in examples if e.label != SAFE_LABEL})
    for category, modality in pairs:
        scored = [e for e in examples if e.modality is modality and category in e.scores]
        positives = [e.scores[category] for e in scored if e.label == category]
        negatives = [e.scores[category] for e in scored if e.label != category]
        if not positives:
            continue
        points = tuple(
            ThresholdStats(
                threshold=t,
                true_positives=sum(s >= t for s in positives),
                false_positives=sum(s >= t for s in negatives),
                false_negatives=sum(s < t for s in positives),
            )
            for t in cuts
        )
        curves.append(CategoryCurve(category, modality, len(positives), len(negatives), points))
    return curves
