"""Task payloads between pipeline stages (versioned; arrays travel as raw bytes).

Each message carries the full `UploadEvent` so any stage can record status, dead-letter the
upload or rebuild the record without looking anything up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import InvalidEvent
from shared.events import Modality, UploadEvent, parse_upload_event
from shared.moderation.detectors import DetectorResult
from shared.moderation.vectors import decode_vectors, encode_vectors
from shared.speech.transcript import Transcript
from shared.wire import pack_array, unpack_array

MESSAGE_VERSION = 1
# The parts a join waits for when a message names none (sent before speech existed).
DEFAULT_JOIN_PARTS: tuple[str, ...] = ("detectors", "embedded")


def _check_version(doc: dict[str, Any], kind: str) -> None:
    if doc.get("v") != MESSAGE_VERSION:
        raise InvalidEvent(f"{kind} message version {doc.get('v')!r} is not {MESSAGE_VERSION}")


@dataclass(frozen=True, slots=True)
class MediaFacts:
    """What the CPU stage learned about the blob (stored with the vector record)."""

    sha256: str | None = None
    size: int | None = None
    content_type: str | None = None  # sniffed from content, never trusted from the name
    declared_content_type: str | None = None
    type_mismatch: bool = False
    notes: tuple[str, ...] = ()  # e.g. "animated image: first frame embedded"

    def to_wire(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "content_type": self.content_type,
            "declared_content_type": self.declared_content_type,
            "type_mismatch": self.type_mismatch,
            "notes": list(self.notes),
        }

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> MediaFacts:
        return cls(
            sha256=doc.get("sha256"),
            size=doc.get("size"),
            content_type=doc.get("content_type"),
            declared_content_type=doc.get("declared_content_type"),
            type_mismatch=bool(doc.get("type_mismatch", False)),
            notes=tuple(doc.get("notes", ())),
        )


@dataclass(frozen=True, slots=True)
class PreparedUpload:
    """CPU -> GPU: model-ready input of one upload.

    `array`: image uint8 (3,224,224); text int32 (77,); audio float16 (clips,1,128,204);
    video uint16 (15,3,2,224,224) fixed point. `parts`: further inputs of the same upload by
    part name, each embedded with its own modality into `VectorRecord.parts` (a video's
    ``audio_track``: audio clips). `join_token`: set when the CPU stage runs detectors on
    this upload meanwhile, or the speech stage transcribes it; the embedding then meets their
    results through `workers.join_store`, which waits for every part named in `join_parts`.
    """

    event: UploadEvent
    modality: Modality
    array: np.ndarray
    facts: MediaFacts = field(default_factory=MediaFacts)
    join_token: str | None = None
    join_parts: tuple[str, ...] = DEFAULT_JOIN_PARTS
    parts: dict[str, tuple[Modality, np.ndarray]] = field(default_factory=dict)
    # A video's sampled frames as image inputs with their times (s), for moderation only.
    frames: tuple[tuple[float, np.ndarray], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": MESSAGE_VERSION,
            "event": self.event.model_dump(mode="json"),
            "modality": self.modality.value,
            "array": pack_array(self.array),
            "facts": self.facts.to_wire(),
            "join_token": self.join_token,
            "join_parts": list(self.join_parts),
            "parts": {
                name: {"modality": modality.value, "array": pack_array(array)}
                for name, (modality, array) in self.parts.items()
            },
            "frames": [{"t": t, "array": pack_array(array)} for t, array in self.frames],
        }

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> PreparedUpload:
        _check_version(doc, "prepared")
        return cls(
            event=parse_upload_event(doc["event"]),
            modality=Modality(doc["modality"]),
            array=unpack_array(doc["array"]),
            facts=MediaFacts.from_wire(doc.get("facts", {})),
            join_token=doc.get("join_token"),
            join_parts=tuple(doc.get("join_parts") or DEFAULT_JOIN_PARTS),
            parts={
                str(name): (Modality(part["modality"]), unpack_array(part["array"]))
                for name, part in (doc.get("parts") or {}).items()
            },
            frames=tuple((float(f["t"]), unpack_array(f["array"])) for f in doc.get("frames") or ()),
        )


@dataclass(frozen=True, slots=True)
class SpeechPart:
    """What the speech stage adds to an upload: its transcript, the unit text embeddings of
    the transcript's passages (n_passages, dim) float32 with the checkpoint that made them
    (None when there is nothing to embed), and per passage the text detectors' scores
    (detector -> label -> score)."""

    transcript: Transcript
    vectors: np.ndarray | None = None
    checkpoint: str | None = None
    detector_scores: tuple[dict[str, dict[str, float]], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "transcript": self.transcript.to_wire(),
            "vectors": pack_array(np.asarray(self.vectors, dtype=np.float32)) if self.vectors is not None else None,
            "checkpoint": self.checkpoint,
            "detector_scores": [dict(scores) for scores in self.detector_scores],
        }

    def to_record(self) -> dict[str, Any]:
        """JSON for the vector record (`VectorRecord.transcript`): the transcript, and its
        passage vectors as base64 float32 so `omnibind rescore` never re-embeds nor
        re-transcribes."""
        doc = {**self.transcript.to_wire(), "checkpoint": self.checkpoint}
        doc["detector_scores"] = [dict(scores) for scores in self.detector_scores]
        if self.vectors is not None and len(self.vectors):
            doc["vectors"] = {"dim": int(self.vectors.shape[1]), "base64": encode_vectors(self.vectors)}
        return doc

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> SpeechPart:
        stored = doc.get("vectors")
        vectors = decode_vectors(stored["base64"], int(stored["dim"])) if stored else None
        return cls.from_wire(
            {"transcript": doc, "checkpoint": doc.get("checkpoint"), "detector_scores": doc.get("detector_scores")}
        ).with_vectors(vectors)

    def with_vectors(self, vectors: np.ndarray | None) -> SpeechPart:
        return SpeechPart(self.transcript, vectors, self.checkpoint, self.detector_scores)

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> SpeechPart:
        vectors = doc.get("vectors")
        return cls(
            transcript=Transcript.from_wire(doc["transcript"]),
            vectors=unpack_array(vectors) if vectors is not None else None,
            checkpoint=doc.get("checkpoint"),
            detector_scores=tuple(
                {str(d): {str(k): float(v) for k, v in labels.items()} for d, labels in scores.items()}
                for scores in doc.get("detector_scores") or ()
            ),
        )


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """CPU -> speech (and speech -> GPU, with `part` set): transcribe one audio upload, and
    store the result as the ``speech`` part of join `join_token`."""

    event: UploadEvent
    join_token: str
    join_parts: tuple[str, ...]
    part: SpeechPart | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": MESSAGE_VERSION,
            "event": self.event.model_dump(mode="json"),
            "join_token": self.join_token,
            "join_parts": list(self.join_parts),
            "part": self.part.to_wire() if self.part is not None else None,
        }

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> SpeechRequest:
        _check_version(doc, "speech")
        part = doc.get("part")
        return cls(
            event=parse_upload_event(doc["event"]),
            join_token=str(doc["join_token"]),
            join_parts=tuple(doc["join_parts"]),
            part=SpeechPart.from_wire(part) if part is not None else None,
        )


@dataclass(frozen=True, slots=True)
class EmbeddedUpload:
    """GPU -> index: the unit-length embedding of one upload and the model that made it, plus
    the CPU detectors' results when they ran (joined in by `workers.join_store`).
    `parts`: the unit-length embeddings of the upload's parts, by name, and their modality."""

    event: UploadEvent
    modality: Modality
    vector: np.ndarray
    model: str
    checkpoint: str
    facts: MediaFacts = field(default_factory=MediaFacts)
    join_token: str | None = None
    detectors: tuple[DetectorResult, ...] = ()
    join_parts: tuple[str, ...] = DEFAULT_JOIN_PARTS
    speech: SpeechPart | None = None
    parts: dict[str, tuple[Modality, np.ndarray]] = field(default_factory=dict)
    # A video's sampled frames embedded as images, with their times (s): moderation scores
    # each (the worst frame wins); not stored.
    frame_vectors: tuple[tuple[float, np.ndarray], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": MESSAGE_VERSION,
            "event": self.event.model_dump(mode="json"),
            "modality": self.modality.value,
            "vector": pack_array(np.asarray(self.vector, dtype=np.float32)),
            "model": self.model,
            "checkpoint": self.checkpoint,
            "facts": self.facts.to_wire(),
            "join_token": self.join_token,
            "detectors": [result.to_wire() for result in self.detectors],
            "join_parts": list(self.join_parts),
            "speech": self.speech.to_wire() if self.speech is not None else None,
            "parts": {
                name: {"modality": modality.value, "vector": pack_array(np.asarray(vector, dtype=np.float32))}
                for name, (modality, vector) in self.parts.items()
            },
            "frame_vectors": [
                {"t": t, "vector": pack_array(np.asarray(vector, dtype=np.float32))} for t, vector in self.frame_vectors
            ],
        }

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> EmbeddedUpload:
        _check_version(doc, "embedded")
        return cls(
            event=parse_upload_event(doc["event"]),
            modality=Modality(doc["modality"]),
            vector=unpack_array(doc["vector"]),
            model=str(doc["model"]),
            checkpoint=str(doc["checkpoint"]),
            facts=MediaFacts.from_wire(doc.get("facts", {})),
            join_token=doc.get("join_token"),
            detectors=tuple(DetectorResult.from_wire(d) for d in doc.get("detectors") or ()),
            join_parts=tuple(doc.get("join_parts") or DEFAULT_JOIN_PARTS),
            speech=SpeechPart.from_wire(doc["speech"]) if doc.get("speech") else None,
            parts={
                str(name): (Modality(part["modality"]), unpack_array(part["vector"]))
                for name, part in (doc.get("parts") or {}).items()
            },
            frame_vectors=tuple((float(f["t"]), unpack_array(f["vector"])) for f in doc.get("frame_vectors") or ()),
        )


@dataclass(frozen=True, slots=True)
class Query:
    """A search query to embed: inline text, or image/audio bytes."""

    modality: Modality
    text: str | None = None
    data: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"v": MESSAGE_VERSION, "modality": self.modality.value, "text": self.text, "data": self.data}

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> Query:
        _check_version(doc, "query")
        return cls(modality=Modality(doc["modality"]), text=doc.get("text"), data=doc.get("data"))
