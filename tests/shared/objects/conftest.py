"""Fixtures for the object store tests.

The contract suite (`store`) runs against every adapter: the local directory, the MinIO
adapter on moto's S3 imitation, and the MinIO adapter on a live MinIO server. The MinIO
adapter's own tests (`make_minio_store`, `s3_server`) run on both S3 servers.
"""

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
from tests.support.minio_server import MinioServer
from tests.support.s3_server import S3Server

S3Like = S3Server | MinioServer
BACKENDS = ["local", "moto", "minio"]


@pytest.fixture
def bucket() -> str:
    """A bucket name no other test uses (the S3 servers live for the whole session)."""
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=["moto", "minio"])
def s3_server(request: pytest.FixtureRequest, moto_s3_server: S3Server) -> S3Like:
    """Each MinIO adapter test runs on moto's S3 server and on a live MinIO."""
    if request.param == "moto":
        return moto_s3_server
    live: MinioServer = request.getfixturevalue("minio_server")
    return live


def _minio_store(settings: Settings) -> MinioObjectStore:
    store = open_object_store(settings)
    assert isinstance(store, MinioObjectStore)
    return store


@pytest.fixture
def make_local_store(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[[], LocalObjectStore]:
    def factory() -> LocalObjectStore:
        store = open_object_store(make_settings(objects={"backend": "local", "root": tmp_path / "objects"}))
        assert isinstance(store, LocalObjectStore)
        return store

    return factory


@pytest.fixture
def make_minio_store(
    make_settings: Callable[..., Settings], s3_server: S3Like
) -> Iterator[Callable[..., MinioObjectStore]]:
    """Build MinIO adapters on this test's S3 server; `overrides` change `objects` settings."""
    stores: list[MinioObjectStore] = []

    def factory(**overrides: Any) -> MinioObjectStore:
        store = _minio_store(make_settings(objects=s3_server.object_settings(**overrides)))
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Iterator[ObjectStore]:
    """Each contract test runs once per adapter (and S3 server)."""
    if request.param == "local":
        yield request.getfixturevalue("make_local_store")()
        return
    server: S3Like = request.getfixturevalue("moto_s3_server" if request.param == "moto" else "minio_server")
    adapter = _minio_store(make_settings(objects=server.object_settings()))
    yield adapter
    adapter.close()
