"""Building the vector record of an upload (pure)."""

from __future__ import annotations

import numpy as np

from shared.events import Moderation, utcnow
from shared.messages import EmbeddedUpload
from shared.speech.transcript import TRANSCRIPT_PART
from shared.vectors.records import VectorRecord


def build_record(embedded: EmbeddedUpload, moderation: Moderation | None = None) -> VectorRecord:
    event, facts = embedded.event, embedded.facts
    return VectorRecord(
        upload_id=event.id,
        vector=embedded.vector,
        modality=embedded.modality,
        object=event.object,
        content_type=facts.content_type,
        size=facts.size,
        sha256=facts.sha256,
        source=event.source,
        tenant=event.tenant,
        metadata=dict(event.metadata),
        moderation=moderation or Moderation(),
        model=embedded.model,
        checkpoint=embedded.checkpoint,
        created_at=event.submitted_at,
        indexed_at=utcnow(),
        transcript=embedded.speech.to_record() if embedded.speech is not None else None,
        parts={**_parts(embedded), **{name: vector for name, (_, vector) in embedded.parts.items()}},
    )


def _parts(embedded: EmbeddedUpload) -> dict[str, np.ndarray]:
    """The transcript as one more vector of the upload: the normalised mean of its passages'
    text embeddings (which passage matched a query is worked out from the stored passage
    vectors: `shared.speech.search`). Only when the passages were embedded by the checkpoint
    of the main vector (one record, one space)."""
    speech = embedded.speech
    if speech is None or speech.vectors is None or not len(speech.vectors) or speech.checkpoint != embedded.checkpoint:
        return {}
    mean = np.asarray(speech.vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return {TRANSCRIPT_PART: (mean / norm).astype(np.float32)} if norm > 0 else {}
