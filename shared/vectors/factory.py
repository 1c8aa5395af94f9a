"""Pick and build the configured vector store adapter."""

from __future__ import annotations

from shared.config import Settings
from shared.vectors.store import VectorStore


def open_vector_store(settings: Settings, *, dimension: int | None = None) -> VectorStore:
    """The vector store of ``settings.vectors.backend``; nothing is connected or opened yet
    (that happens on first use, in the process that uses it: call this after a fork or before,
    either is safe).

    `dimension` (e.g. the loaded model's output size) overrides ``OMNIBIND_VECTORS__DIMENSION``;
    with neither, the store takes the dimension of what it already holds or of the first write.
    Raises `ConfigError` for an incomplete configuration (weaviate without a URL...).
    """
    # Adapters are imported on demand: each pulls in its own client library.
    if settings.vectors.backend == "weaviate":
        from shared.vectors.weaviate import WeaviateVectorStore

        return WeaviateVectorStore.from_settings(settings, dimension=dimension)
    from shared.vectors.lancedb import LanceDBVectorStore

    return LanceDBVectorStore.from_settings(settings, dimension=dimension)
