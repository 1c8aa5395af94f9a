"""open_vector_store picks the configured adapter."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.config import Settings
from shared.errors import ConfigError
from shared.vectors.factory import open_vector_store
from shared.vectors.lancedb import LanceDBVectorStore
from shared.vectors.store import VectorStore
from shared.vectors.weaviate import WeaviateVectorStore


def test_the_default_is_the_embedded_store_under_the_data_dir(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    store = open_vector_store(settings)
    assert isinstance(store, LanceDBVectorStore) and isinstance(store, VectorStore)
    assert str(settings.data_dir / "vectors") in repr(store)


def test_an_explicit_dimension_overrides_the_configured_one(make_settings: Callable[..., Settings]) -> None:
    store = open_vector_store(make_settings(vectors={"dimension": 1024}), dimension=32)
    assert isinstance(store, LanceDBVectorStore) and store.dimension == 32


def test_the_weaviate_backend_is_chosen_by_settings(make_settings: Callable[..., Settings]) -> None:
    store = open_vector_store(make_settings(vectors={"backend": "weaviate", "url": "http://weaviate:8080"}))
    assert isinstance(store, WeaviateVectorStore) and isinstance(store, VectorStore)


def test_the_weaviate_backend_needs_a_url(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="OMNIBIND_VECTORS__URL"):
        open_vector_store(make_settings(vectors={"backend": "weaviate"}))


def test_vector_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIBIND_VECTORS__BACKEND", "weaviate")
    monkeypatch.setenv("OMNIBIND_VECTORS__URL", "http://weaviate:8080")
    monkeypatch.setenv("OMNIBIND_VECTORS__API_KEY", "k")
    monkeypatch.setenv("OMNIBIND_VECTORS__DIMENSION", "1024")
    monkeypatch.setenv("OMNIBIND_VECTORS__COMPACT_EVERY_WRITES", "0")
    settings = Settings()
    assert settings.vectors.backend == "weaviate" and settings.vectors.dimension == 1024
    assert settings.vectors.api_key is not None and settings.vectors.api_key.get_secret_value() == "k"
    assert settings.vectors.compact_every_writes == 0
