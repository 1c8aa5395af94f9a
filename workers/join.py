"""The detector/embedding/speech join of one upload, as the worker stages do it.

The CPU stage opens the join (`open_join`) and runs the detectors (`detect_and_join`), the
GPU stage stores the embedding (`embed_and_join`), the speech stage its transcript
(`speech_and_join`); each stores its part in the run's Redis hash
(`workers.join_store.Join`), and whichever completes the set gets the upload back with
every part attached, to hand on to the index stage.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid

import msgpack

from shared.media.decoded import DecodedMedia
from shared.messages import EmbeddedUpload, PreparedUpload, SpeechPart, SpeechRequest
from shared.moderation.detectors import DetectorResult
from workers.join_store import DETECTORS_PART, EMBEDDED_PART, SPEECH_PART
from workers.moderation import ModerationRuntime


def new_join_token() -> str:
    return uuid.uuid4().hex


def open_join(runtime: ModerationRuntime, prepared: PreparedUpload) -> None:
    """Record which parts `prepared`'s join waits for, before any of them can arrive."""
    assert prepared.join_token is not None
    runtime.join.open(prepared.event.id, prepared.join_token, prepared.join_parts)


def detect_and_join(runtime: ModerationRuntime, prepared: PreparedUpload, media: DecodedMedia) -> EmbeddedUpload | None:
    """Run the enabled detectors on `media` and store their results as this upload's
    detectors part; returns the embedded upload with the results attached when the
    embedding was there already (the caller hands it to the index stage), else None (the
    GPU side will)."""
    assert prepared.join_token is not None
    upload_id = prepared.event.id
    crashed = runtime.guard.begin(upload_id)
    max_crashes = runtime.settings.moderation.detector_max_crashes
    if crashed >= max_crashes:
        note = f"skipped: the worker crashed {crashed} times while running detectors on this upload"
        results = tuple(DetectorResult(name, error=note) for name in runtime.detectors.for_modality(media.modality))
    else:
        results = runtime.detectors.run(media)
    runtime.guard.end(upload_id)
    payload = json.dumps([result.to_wire() for result in results])
    parts = runtime.join.put(upload_id, prepared.join_token, DETECTORS_PART, payload, prepared.join_parts)
    return _combine(parts) if parts is not None else None


def embed_and_join(runtime: ModerationRuntime, embedded: EmbeddedUpload) -> EmbeddedUpload | None:
    """Store `embedded` as its upload's embedding part; returns it with the detector results
    attached when they were there already, else None (the CPU side will hand it on)."""
    assert embedded.join_token is not None
    payload = base64.b64encode(msgpack.packb(embedded.to_wire(), use_bin_type=True)).decode("ascii")
    parts = runtime.join.put(embedded.event.id, embedded.join_token, EMBEDDED_PART, payload, embedded.join_parts)
    return _combine(parts) if parts is not None else None


def speech_and_join(runtime: ModerationRuntime, request: SpeechRequest, part: SpeechPart) -> EmbeddedUpload | None:
    """Store `part` as its upload's speech part; returns the embedded upload with everything
    attached when the other parts were there already, else None (their side hands it on)."""
    payload = base64.b64encode(msgpack.packb(part.to_wire(), use_bin_type=True)).decode("ascii")
    parts = runtime.join.put(request.event.id, request.join_token, SPEECH_PART, payload, request.join_parts)
    return _combine(parts) if parts is not None else None


def _combine(parts: dict[str, str]) -> EmbeddedUpload:
    embedded = EmbeddedUpload.from_wire(msgpack.unpackb(base64.b64decode(parts[EMBEDDED_PART]), raw=False))
    detectors = tuple(DetectorResult.from_wire(doc) for doc in json.loads(parts.get(DETECTORS_PART) or "[]"))
    speech = None
    if SPEECH_PART in parts:
        speech = SpeechPart.from_wire(msgpack.unpackb(base64.b64decode(parts[SPEECH_PART]), raw=False))
    return dataclasses.replace(embedded, detectors=detectors, speech=speech)
