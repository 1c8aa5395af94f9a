"""Search hits that matched an upload's transcript: which passage, said when (pure).

A record's ``transcript`` vector is the mean of its passages' embeddings; the passages'
own vectors are kept in the record (`VectorRecord.transcript`), so the passage nearest the
query is found here without another search.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shared.moderation.vectors import decode_vectors
from shared.speech.transcript import TRANSCRIPT_PART, Passage
from shared.vectors.records import SearchHit


def nearest_passage(transcript: dict[str, object] | None, query: np.ndarray) -> tuple[Passage, float] | None:
    """The stored passage most similar to `query` and its cosine similarity; None when the
    record keeps no passage vectors."""
    if not transcript:
        return None
    stored = transcript.get("vectors")
    passages = transcript.get("passages")
    if not isinstance(stored, dict) or not isinstance(passages, list) or not passages:
        return None
    vectors = decode_vectors(str(stored["base64"]), int(stored["dim"]))
    if vectors.shape[0] != len(passages) or vectors.shape[1] != query.shape[-1]:
        return None
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    q = q / (float(np.linalg.norm(q)) or 1.0)
    scores = vectors @ q
    best = int(np.argmax(scores))
    return Passage.from_wire(passages[best]), float(scores[best])


def explain_hits(hits: list[SearchHit], query: np.ndarray) -> list[SearchHit]:
    """`hits` with a `detail` on those that matched a transcript: the words and their times."""
    out = []
    for hit in hits:
        found = nearest_passage(hit.record.transcript, query) if hit.part == TRANSCRIPT_PART else None
        out.append(dataclasses.replace(hit, detail=f"transcript: said {found[0].quote()}") if found else hit)
    return out
