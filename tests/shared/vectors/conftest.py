"""Factories for vector store tests: records, and stores of every backend.

The contract suite runs against each backend through `make_store`. The Weaviate run uses a
live server: the one `make servers` built, started once per session
(tests/support/weaviate_server.py), or the one ``WEAVIATE_URL`` names. Each Weaviate test
gets collections of its own, dropped afterwards.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from shared.events import Modality, Moderation, ObjectRef
from shared.vectors.records import VectorRecord
from shared.vectors.store import VectorStore
from tests.support.weaviate_server import WeaviateAddress

TEST_DIM = 32  # the tiny model's dimension


def unit_vector(seed: str | int, dim: int = TEST_DIM) -> np.ndarray:
    """A reproducible random unit vector (float32) for `seed`."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def make_record() -> Callable[..., VectorRecord]:
    """Build a `VectorRecord`; its vector is `unit_vector(upload_id, dim)` unless given."""

    counter = iter(range(1_000_000))

    def factory(upload_id: str | None = None, *, dim: int = TEST_DIM, **fields: Any) -> VectorRecord:
        upload_id = upload_id or f"up-{next(counter)}"
        fields.setdefault("vector", unit_vector(upload_id, dim))
        fields.setdefault("modality", Modality.IMAGE)
        return VectorRecord(upload_id=upload_id, **fields)

    return factory


@pytest.fixture
def full_record() -> Callable[..., VectorRecord]:
    """A record with every property set to a non-default value (for round-trip tests)."""

    def factory(upload_id: str = "full-1", **fields: Any) -> VectorRecord:
        created = datetime(2025, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)
        values: dict[str, Any] = {
            "upload_id": upload_id,
            "vector": unit_vector(upload_id),
            "modality": Modality.AUDIO,
            "object": ObjectRef(
                bucket="uploads",
                key="tenant-a/2025/clip ü.wav",
                version_id="v-3",
                etag='"9b2cf535f27731c974343645a3985328"',
                size=48_000,
                content_type="audio/x-wav",
            ),
            "content_type": "audio/wav",
            "size": 47_980,
            "sha256": "ab" * 32,
            "source": "cli",
            "tenant": "tenant-a",
            "metadata": {"camera": "Nikon Z6", "note": "naïve \"quotes\" 'and' ünïcode", "empty": ""},
            "moderation": Moderation(
                flagged=True,
                categories=("violence", "weapons"),
                scores={"violence": 0.91, "weapons": 0.62, "nudity": 0.01},
                policy_version="2025-03-01",
            ),
            "model": "imagebind_huge",
            "checkpoint": "cd" * 32,
            "transcript": {"text": "I am going to kill you tomorrow.", "language": "en", "segments": []},
            "created_at": created,
            "indexed_at": created + timedelta(seconds=2, microseconds=500_000),
        }
        values.update(fields)
        return VectorRecord(**values)

    return factory


StoreFactory = Callable[..., VectorStore]


@pytest.fixture(params=["lancedb", pytest.param("weaviate", marks=pytest.mark.weaviate)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Open a store of the parametrised backend: ``make_store(name="a", dimension=None)``.

    The same `name` within one test opens another handle on the same store (as another
    worker would); a new name is a separate, empty store.
    """
    backend: str = request.param
    server: WeaviateAddress | None = request.getfixturevalue("weaviate") if backend == "weaviate" else None
    opened: list[VectorStore] = []
    prefix = f"OmnibindTest{uuid.uuid4().hex[:12]}"

    def factory(*, name: str = "a", dimension: int | None = None, **options: Any) -> VectorStore:
        store: VectorStore
        if backend == "lancedb":
            from shared.vectors.lancedb import LanceDBVectorStore

            store = LanceDBVectorStore(tmp_path / "vectors", table=f"t_{name}", dimension=dimension, **options)
        else:
            assert server is not None
            store = weaviate_store(server, f"{prefix}{name.capitalize()}", dimension, **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()
    if server is not None:
        drop_weaviate_collections(server, prefix)


def weaviate_store(server: WeaviateAddress, collection: str, dimension: int | None, **options: Any) -> VectorStore:
    from shared.vectors.weaviate import WeaviateVectorStore, parse_endpoint

    return WeaviateVectorStore(
        parse_endpoint(server.url, grpc_port=server.grpc_port),
        api_key=SecretStr(server.api_key) if server.api_key else None,
        collection=collection,
        dimension=dimension,
        **options,
    )


def drop_weaviate_collections(server: WeaviateAddress, prefix: str) -> None:
    import weaviate
    from weaviate.classes.init import AdditionalConfig, Auth

    from shared.vectors.weaviate import parse_endpoint

    endpoint = parse_endpoint(server.url, grpc_port=server.grpc_port)
    with weaviate.connect_to_custom(
        http_host=endpoint.http_host,
        http_port=endpoint.http_port,
        http_secure=endpoint.http_secure,
        grpc_host=endpoint.grpc_host,
        grpc_port=endpoint.grpc_port,
        grpc_secure=endpoint.grpc_secure,
        auth_credentials=Auth.api_key(server.api_key) if server.api_key else None,
        skip_init_checks=True,
        additional_config=AdditionalConfig(),
    ) as client:
        for name in client.collections.list_all(simple=True):
            if name.startswith(prefix):
                client.collections.delete(name)


@pytest.fixture
def store(make_store: StoreFactory) -> VectorStore:
    """A fresh, empty store of the parametrised backend."""
    return make_store()
