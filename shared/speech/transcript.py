"""A transcript of an upload's speech, and the pieces of it that are embedded and quoted (pure).

A transcript is a list of Whisper segments (start/end seconds, text, confidence). Segments
are grouped into *passages* of at most `max_words` words: ImageBind's text encoder reads 77
tokens, so a long transcript is embedded passage by passage, and a moderation reason or a
search hit quotes the passage with its times.

Confidence of a segment is exp(avg_logprob) of its tokens (Whisper's own measure; 1 = the
model was sure of every token). The transcript's is the duration-weighted mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

# A transcript whose confidence is below this is said to be unreliable (speech in a
# language the model does not know, heavy noise, music with vocals): Whisper then tends to
# produce fluent text that was never said.
LOW_CONFIDENCE = 0.45
# The name of the transcript's vector among a record's parts (`VectorRecord.parts`).
TRANSCRIPT_PART = "transcript"
MAX_QUOTE_CHARS = 200


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float
    text: str
    confidence: float

    def to_wire(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "text": self.text, "confidence": self.confidence}

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> Segment:
        return cls(float(doc["start_s"]), float(doc["end_s"]), str(doc["text"]), float(doc["confidence"]))


@dataclass(frozen=True, slots=True)
class Passage:
    """Consecutive segments embedded (and quoted) together."""

    start_s: float
    end_s: float
    text: str

    def quote(self) -> str:
        """``"I am going to kill you tomorrow." at 0:00-0:02``."""
        text = self.text if len(self.text) <= MAX_QUOTE_CHARS else self.text[: MAX_QUOTE_CHARS - 1] + "…"
        return f'"{text}" at {clock(self.start_s)}-{clock(self.end_s)}'

    def to_wire(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "text": self.text}

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> Passage:
        return cls(float(doc["start_s"]), float(doc["end_s"]), str(doc["text"]))


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the speech stage produced for one upload.

    `duration_s`: the audio's length; `transcribed_s`: how much of it was given to the model
    (the per-upload cap); `speech_s`: how much of that the voice-activity detector kept.
    `error`: why there is no transcript (the upload itself is not failed by it).
    """

    model: str = ""
    language: str | None = None
    language_probability: float | None = None
    segments: tuple[Segment, ...] = ()
    duration_s: float = 0.0
    transcribed_s: float = 0.0
    speech_s: float = 0.0
    notes: tuple[str, ...] = ()
    error: str | None = None
    passages: tuple[Passage, ...] = field(default=())

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    @property
    def confidence(self) -> float | None:
        weights = [(max(s.end_s - s.start_s, 1e-3), s.confidence) for s in self.segments]
        total = sum(w for w, _ in weights)
        return round(sum(w * c for w, c in weights) / total, 4) if total else None

    @property
    def not_transcribed_s(self) -> float:
        return max(0.0, round(self.duration_s - self.transcribed_s, 3))

    def to_wire(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "language": self.language,
            "language_probability": self.language_probability,
            "text": self.text,
            "confidence": self.confidence,
            "segments": [s.to_wire() for s in self.segments],
            "passages": [p.to_wire() for p in self.passages],
            "duration_s": self.duration_s,
            "transcribed_s": self.transcribed_s,
            "not_transcribed_s": self.not_transcribed_s,
            "speech_s": self.speech_s,
            "notes": list(self.notes),
            "error": self.error,
        }

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> Transcript:
        probability = doc.get("language_probability")
        return cls(
            model=str(doc.get("model") or ""),
            language=doc.get("language"),
            language_probability=float(probability) if probability is not None else None,
            segments=tuple(Segment.from_wire(s) for s in doc.get("segments") or ()),
            duration_s=float(doc.get("duration_s") or 0.0),
            transcribed_s=float(doc.get("transcribed_s") or 0.0),
            speech_s=float(doc.get("speech_s") or 0.0),
            notes=tuple(str(n) for n in doc.get("notes") or ()),
            error=doc.get("error"),
            passages=tuple(Passage.from_wire(p) for p in doc.get("passages") or ()),
        )


def clock(seconds: float) -> str:
    """``75.4`` -> ``1:15``; an hour or more -> ``1:02:03``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def segment_confidence(avg_logprob: float) -> float:
    return round(math.exp(min(0.0, avg_logprob)), 4)


def passages(segments: tuple[Segment, ...], *, max_words: int) -> tuple[Passage, ...]:
    """Group consecutive segments into passages of at most `max_words` words (a segment
    longer than that is split by words, its times shared out in proportion)."""
    out: list[Passage] = []
    words: list[str] = []
    start = end = 0.0
    for segment in segments:
        seg_words = segment.text.split()
        if not seg_words:
            continue
        per_word = (segment.end_s - segment.start_s) / len(seg_words)
        for i, word in enumerate(seg_words):
            if not words:
                start = segment.start_s + i * per_word
            words.append(word)
            end = segment.start_s + (i + 1) * per_word
            if len(words) >= max_words:
                out.append(Passage(round(start, 2), round(end, 2), " ".join(words)))
                words = []
        if words and len(words) >= max_words // 2:  # a segment end is a good place to cut
            out.append(Passage(round(start, 2), round(segment.end_s, 2), " ".join(words)))
            words = []
        end = segment.end_s
    if words:
        out.append(Passage(round(start, 2), round(end, 2), " ".join(words)))
    return tuple(out)


STATUS_TEXT_CHARS = 4000
STATUS_SEGMENTS = 100


def status_transcript(transcript: Transcript) -> dict[str, Any]:
    """The transcript as the status record and the result event carry it: bounded (text cut
    at 4,000 characters, the first 100 segments); the vector record keeps all of it."""
    doc = transcript.to_wire()
    doc.pop("passages")
    text = doc["text"]
    if len(text) > STATUS_TEXT_CHARS:
        doc["text"] = text[: STATUS_TEXT_CHARS - 1] + "…"
    if len(transcript.segments) > STATUS_SEGMENTS:
        doc["segments"] = doc["segments"][:STATUS_SEGMENTS]
        doc["segments_left_out"] = len(transcript.segments) - STATUS_SEGMENTS
    return doc


_NON_WORD = re.compile(r"[^\w']+")


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces, padded with one space each side (so
    that a phrase matches whole words only: ``" kill you "``)."""
    return " " + " ".join(_NON_WORD.sub(" ", text.lower()).split()) + " "


def find_phrase(phrase: str, text: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words (case and punctuation ignored)."""
    needle = normalise(phrase)
    return needle.strip() != "" and needle in normalise(text)
