"""The search side of the producer API: a query (text, image, audio or video) embedded by the
workers (CPU preprocess -> GPU embed, by task name: producers never load the model), then
searched in the vector store. `producers.client.Client.search` is the way in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from shared.errors import TransientError
from shared.events import Modality
from shared.messages import Query
from shared.queue import QueueName, TaskName
from shared.speech.search import explain_hits
from shared.vectors.records import SearchFilters, SearchHit
from shared.vectors.store import VectorStore
from shared.wire import unpack_array


class QueryFailed(TransientError):
    reason = "query_failed"


@dataclass(frozen=True, slots=True)
class QueryEmbedding:
    vector: np.ndarray  # (dim,) float32, unit length
    model: str
    checkpoint: str
    # {record modality: vector} when the model searches some modalities with another vector
    # (PE-AV text queries: text-audio head for audio, text-video head for the rest); else None.
    targets: dict[Modality, np.ndarray] | None = None


def query_of(text: str | None, image: bytes | None, audio: bytes | None, video: bytes | None = None) -> Query:
    """The query of the one argument given; `ValueError` unless exactly one is."""
    files = {Modality.IMAGE: image, Modality.AUDIO: audio, Modality.VIDEO: video}
    given = [name for name, value in (("text", text), *((m.value, v) for m, v in files.items())) if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of text, image, audio, video (got {given or 'none'})")
    if text is not None:
        return Query(Modality.TEXT, text=text)
    modality, data = next((m, v) for m, v in files.items() if v is not None)
    return Query(modality, data=data)


def embed_query(celery: Celery, query: Query, *, timeout_s: float) -> QueryEmbedding:
    """`query`'s embedding, with the model and checkpoint that made it, computed by the
    workers. Raises `PermanentError` for a bad query, `QueryFailed` on timeout."""
    chain = celery.signature(TaskName.PREPARE_QUERY.value, args=[query.to_wire()], queue=QueueName.CPU) | (
        celery.signature(TaskName.EMBED_QUERY.value, queue=QueueName.GPU)
    )
    reply = worker_reply(chain.apply_async(), timeout_s=timeout_s, what="query embedding", workers="workers")
    targets = reply.get("targets")
    return QueryEmbedding(
        unpack_array(reply["vector"]),
        str(reply["model"]),
        str(reply["checkpoint"]),
        {Modality(name): unpack_array(packed) for name, packed in targets.items()} if targets else None,
    )


def worker_reply(result: AsyncResult[Any], *, timeout_s: float, what: str, workers: str) -> Any:
    """What the workers answered to a task sent for a reply, forgotten once read (or not:
    nobody asks again). Raises `QueryFailed` naming `what` and `workers` on timeout."""
    try:
        return result.get(timeout=timeout_s)
    except CeleryTimeout as exc:
        raise QueryFailed(f"no {what} within {timeout_s:.0f} s: are the {workers} running?") from exc
    finally:
        result.forget()


def search_embedding(store: VectorStore, query: QueryEmbedding, *, k: int, filters: SearchFilters) -> list[SearchHit]:
    """One search with the query's vector, or, when the model gives one vector per target
    modality, one search per modality (each with its vector, restricted to that modality)
    merged best first. Scores of different heads are cosines in different pairings: merged
    as they are (docs/model.md, "What differs from ImageBind")."""
    # A hit through a transcript says which words matched, and when (shared.speech.search).
    if query.targets is None:
        return explain_hits(store.search(query.vector, k=k, filters=filters), query.vector)
    wanted = [filters.modality] if filters.modality is not None else list(query.targets)
    hits: list[SearchHit] = []
    for modality in wanted:
        vector = query.targets.get(modality, query.vector)
        hits.extend(store.search(vector, k=k, filters=dataclasses.replace(filters, modality=modality)))
    return explain_hits(sorted(hits, key=lambda hit: hit.score, reverse=True)[:k], query.vector)
