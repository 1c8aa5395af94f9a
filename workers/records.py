"""Building the vector record of an upload (pure)."""

from __future__ import annotations

from shared.events import Moderation, utcnow
from shared.messages import EmbeddedUpload
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
    )
