"""Evidence + policy -> the moderation decision (pure).

Every category of the policy is evaluated on every signal that applies to the upload:

- zero-shot: its score for the upload's modality against the category's thresholds for
  that modality (`Category.thresholds_for`);
- each detector rule of the category whose detector ran: the highest score among the
  rule's labels (0 when none was detected) against the rule's thresholds;
- each blocklist match of the category: an exact (SHA-256) match, or a near duplicate
  whose cosine distance is within the policy's ``blocklist.max_distance``; it reaches the
  policy's ``blocklist.band`` (score = 1 - distance, the threshold 1 - max_distance).

A category's band is the highest band among its signals; the upload is `flagged` when any
category reaches review or block; `action` is the highest band overall. Every signal is
kept with its thresholds and margin, so a reviewer sees why — and why not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shared.events import Band, Modality, Moderation, ModerationSignal, utcnow
from shared.moderation.blocklist_index import BlocklistMatch
from shared.moderation.detectors import DetectorResult
from shared.moderation.policy import Policy, Thresholds

SCORE_DIGITS = 6


@dataclass(frozen=True, slots=True)
class Evidence:
    """What is known about one upload when it is moderated."""

    modality: Modality
    zero_shot: Mapping[str, float] = field(default_factory=dict)  # category -> score
    detectors: Sequence[DetectorResult] = ()
    blocklist: Sequence[BlocklistMatch] = ()
    notes: Sequence[str] = ()
    # Signals worked out elsewhere, e.g. on the upload's transcript (shared.moderation.speech).
    extra_signals: Sequence[ModerationSignal] = ()


def decide(
    policy: Policy,
    evidence: Evidence,
    *,
    model: str | None = None,
    checkpoint: str | None = None,
    decided_at: datetime | None = None,
) -> Moderation:
    """The decision for `evidence` under `policy` (see the module docstring)."""
    signals = [
        *_zero_shot_signals(policy, evidence),
        *_detector_signals(policy, evidence.detectors),
        *_blocklist_signals(policy, evidence.blocklist),
        *(signal for signal in evidence.extra_signals if signal.category in policy.categories),
    ]
    bands = {name: Band.ALLOW for name in policy.categories}
    for signal in signals:
        if signal.band.rank > bands.get(signal.category, Band.ALLOW).rank:
            bands[signal.category] = signal.band
    fired = tuple(sorted(name for name, band in bands.items() if band is not Band.ALLOW))
    action = max(bands.values(), key=lambda band: band.rank, default=Band.ALLOW)
    notes = [*evidence.notes, *(f"detector {r.name} failed: {r.error}" for r in evidence.detectors if r.error)]
    return Moderation(
        flagged=bool(fired),
        categories=fired,
        action=action,
        bands=bands,
        scores={name: round(score, SCORE_DIGITS) for name, score in evidence.zero_shot.items()},
        detector_scores={
            r.name: {label: round(s, SCORE_DIGITS) for label, s in r.scores.items()}
            for r in evidence.detectors
            if r.error is None
        },
        signals=tuple(signals),
        notes=tuple(notes),
        policy_version=policy.version,
        policy_name=policy.name,
        model=model,
        checkpoint=checkpoint,
        decided_at=decided_at or utcnow(),
    )


def make_signal(
    category: str, source: str, name: str, score: float, thresholds: Thresholds, detail: str = ""
) -> ModerationSignal:
    band = thresholds.band(score)
    threshold = thresholds.block if band is Band.BLOCK else thresholds.review
    return ModerationSignal(
        category=category,
        source=source,
        name=name,
        score=round(score, SCORE_DIGITS),
        review=thresholds.review,
        block=thresholds.block,
        band=band,
        margin=round(score - threshold, SCORE_DIGITS),
        detail=detail,
    )


def _zero_shot_signals(policy: Policy, evidence: Evidence) -> list[ModerationSignal]:
    return [
        make_signal(
            name, "zeroshot", evidence.modality.value, score, policy.categories[name].thresholds_for(evidence.modality)
        )
        for name, score in evidence.zero_shot.items()
        if name in policy.categories
    ]


def _detector_signals(policy: Policy, results: Sequence[DetectorResult]) -> list[ModerationSignal]:
    ran = {r.name: r for r in results if r.error is None}
    signals = []
    for name, category in policy.categories.items():
        for detector, rule in category.detectors.items():
            result = ran.get(detector)
            if result is None:
                continue
            label, score = max(((lbl, result.scores.get(lbl, 0.0)) for lbl in rule.labels), key=lambda p: p[1])
            # a video's frames: the worst frame's time says where to look
            detail = f"frame at {result.at_s[label]:.1f} s" if label in result.at_s else ""
            signals.append(make_signal(name, detector, label, score, rule, detail=detail))
    return signals


def _blocklist_signals(policy: Policy, matches: Sequence[BlocklistMatch]) -> list[ModerationSignal]:
    """Matches are within ``max_distance`` by construction: each reaches the configured band.
    Score = similarity (1 - distance); both thresholds read as the similarity needed."""
    rule = policy.blocklist
    needed = round(1.0 - rule.max_distance, SCORE_DIGITS)
    signals = []
    for match in matches:
        score = 1.0 if match.exact else 1.0 - match.distance
        detail = (
            "same SHA-256 as the listed example"
            if match.exact
            else f"cosine distance {match.distance:.4f} <= {rule.max_distance}"
        )
        signals.append(
            ModerationSignal(
                category=match.category,
                source="blocklist",
                name=match.entry_id,
                score=round(score, SCORE_DIGITS),
                review=needed,
                block=needed,
                band=Band(rule.band),
                margin=round(score - needed, SCORE_DIGITS),
                detail=detail,
            )
        )
    return signals


def describe_signal(signal: ModerationSignal) -> str:
    """One line a reviewer can read: ``violence: zeroshot image 0.912 >= block 0.85 (+0.062)``."""
    if signal.band is Band.ALLOW:
        relation = f"< review {signal.review:g}"
    else:
        threshold = signal.block if signal.band is Band.BLOCK else signal.review
        relation = f">= {signal.band.value} {threshold:g}"
    what = f"{signal.source} {signal.name}".strip()
    text = f"{signal.category}: {what} {signal.score:.3f} {relation} ({signal.margin:+.3f})"
    return f"{text}; {signal.detail}" if signal.detail else text
