"""Moderation of what is said in an upload: its transcript under the policy's text rules (pure).

Each passage of the transcript (`shared.speech.transcript.Passage`) is judged on its own, as
a text upload would be:

- zero-shot: the passage's text embedding against each category's *text* prompts and text
  thresholds;
- the abusive-language classifier (``profanity`` detector) on the passage's words, against
  the category's detector rule;
- the example blocklist: a passage within ``blocklist.max_distance`` of a listed example;
- blocklisted phrases (a category's ``phrases``), as whole words.

For every category and source, the strongest passage becomes one signal with source
``speech``; its detail quotes the words and their times, so a reviewer sees what was said
and where. A transcript that could not be made is a note, never a flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from shared.events import Band, Modality, ModerationSignal
from shared.moderation.blocklist_index import BlocklistMatch
from shared.moderation.decision import SCORE_DIGITS, make_signal
from shared.moderation.policy import Policy
from shared.moderation.zeroshot import PromptGroups, zero_shot_scores
from shared.speech.transcript import Passage, Transcript, find_phrase

SOURCE = "speech"


def speech_signals(
    policy: Policy,
    transcript: Transcript,
    *,
    vectors: np.ndarray | None = None,
    text_groups: PromptGroups | None = None,
    detector_scores: Sequence[Mapping[str, Mapping[str, float]]] = (),
    blocklist: Sequence[Sequence[BlocklistMatch]] = (),
) -> list[ModerationSignal]:
    """Signals of `transcript` under `policy`.

    `vectors`: (len(passages), dim) unit text embeddings of the passages (None: no zero-shot);
    `detector_scores[i]`: detector name -> label -> score of passage i;
    `blocklist[i]`: blocklist matches of passage i's embedding."""
    passages = transcript.passages
    signals: list[ModerationSignal] = []
    if vectors is not None and text_groups is not None and len(passages):
        per_passage = [zero_shot_scores(text_groups, vectors[i]) for i in range(len(passages))]
        for name in text_groups.categories:
            best = max(range(len(passages)), key=lambda i: per_passage[i][name])
            thresholds = policy.categories[name].thresholds_for(Modality.TEXT)
            signals.append(
                _speech(make_signal(name, SOURCE, "zeroshot text", per_passage[best][name], thresholds), passages[best])
            )
    for name, category in policy.categories.items():
        for detector, rule in category.detectors.items():
            scored = [
                (i, max(scores[detector].get(label, 0.0) for label in rule.labels))
                for i, scores in enumerate(detector_scores)
                if detector in scores and i < len(passages)
            ]
            if scored:
                best, score = max(scored, key=lambda pair: pair[1])
                signals.append(_speech(make_signal(name, SOURCE, detector, score, rule), passages[best]))
        if category.phrases is not None:
            signals.extend(_phrase_signals(name, category.phrases.match, Band(category.phrases.band), passages))
    signals.extend(_blocklist_signals(policy, blocklist, passages))
    return signals


def _speech(signal: ModerationSignal, passage: Passage) -> ModerationSignal:
    return signal.model_copy(update={"detail": f"said {passage.quote()}"})


def _phrase_signals(
    category: str, phrases: Sequence[str], band: Band, passages: Sequence[Passage]
) -> list[ModerationSignal]:
    for passage in passages:
        found = [phrase for phrase in phrases if find_phrase(phrase, passage.text)]
        if found:
            return [
                ModerationSignal(
                    category=category,
                    source=SOURCE,
                    name="phrase",
                    score=1.0,
                    review=1.0,
                    block=1.0,
                    band=band,
                    margin=0.0,
                    detail=f"blocklisted {', '.join(repr(p) for p in found)}: said {passage.quote()}",
                )
            ]
    return []


def _blocklist_signals(
    policy: Policy, blocklist: Sequence[Sequence[BlocklistMatch]], passages: Sequence[Passage]
) -> list[ModerationSignal]:
    rule = policy.blocklist
    needed = round(1.0 - rule.max_distance, SCORE_DIGITS)
    best: dict[str, tuple[float, BlocklistMatch, Passage]] = {}
    for i, matches in enumerate(blocklist):
        if i >= len(passages):
            break
        for match in matches:
            score = 1.0 - match.distance
            if match.category not in best or score > best[match.category][0]:
                best[match.category] = (score, match, passages[i])
    return [
        ModerationSignal(
            category=category,
            source=SOURCE,
            name=f"blocklist {match.entry_id}",
            score=round(score, SCORE_DIGITS),
            review=needed,
            block=needed,
            band=Band(rule.band),
            margin=round(score - needed, SCORE_DIGITS),
            detail=f"cosine distance {match.distance:.4f} <= {rule.max_distance}: said {passage.quote()}",
        )
        for category, (score, match, passage) in sorted(best.items())
    ]


def transcript_notes(transcript: Transcript) -> list[str]:
    """Notes a decision carries about its transcript (why it is missing, partial or unsure)."""
    if transcript.error:
        return [f"speech: no transcript: {transcript.error}"]
    return [f"speech: {note}" for note in transcript.notes]
