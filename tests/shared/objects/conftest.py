"""Fixtures for the object store tests: one `store` fixture parametrised over every adapter."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.objects.factory import open_object_store
from shared.objects.local import LocalObjectStore
from shared.objects.minio import MinioObjectStore
from shared.objects.store import ObjectStore
from tests.support.s3_server import S3Server, s3_server

__all__ = ["s3_server"]  # re-exported so pytest registers the session fixture here

BACKENDS = ["local", "minio"]


@pytest.fixture
def bucket() -> str:
    """A bucket name no other test uses (the S3 server lives for the whole session)."""
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def make_local_store(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[[], LocalObjectStore]:
    def factory() -> LocalObjectStore:
        store = open_object_store(make_settings(objects={"backend": "local", "root": tmp_path / "objects"}))
        assert isinstance(store, LocalObjectStore)
        return store

    return factory


@pytest.fixture
def make_minio_store(
    make_settings: Callable[..., Settings], s3_server: S3Server
) -> Iterator[Callable[..., MinioObjectStore]]:
    """Build MinIO adapters on the session's S3 server; `overrides` change `objects` settings."""
    stores: list[MinioObjectStore] = []

    def factory(**overrides: Any) -> MinioObjectStore:
        store = open_object_store(make_settings(objects=s3_server.object_settings(**overrides)))
        assert isinstance(store, MinioObjectStore)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each contract test runs once per adapter."""
    factory: Callable[[], ObjectStore] = request.getfixturevalue(f"make_{request.param}_store")
    return factory()
