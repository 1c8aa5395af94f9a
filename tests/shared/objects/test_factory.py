"""`open_object_store` builds the adapter the settings name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shared.config import Settings
from shared.objects.factory import open_object_store
from shared.objects.local import LocalObjectStore
from shared.objects.minio import MinioObjectStore
from tests.support.s3_server import S3Server


def test_local_backend_is_rooted_in_the_data_dir_by_default(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()

    store = open_object_store(settings)

    assert isinstance(store, LocalObjectStore)
    assert store.root == (settings.data_dir / "objects").resolve()


def test_local_backend_honours_an_explicit_root(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    store = open_object_store(make_settings(objects={"backend": "local", "root": tmp_path / "elsewhere"}))

    assert isinstance(store, LocalObjectStore)
    assert store.root == (tmp_path / "elsewhere").resolve()


def test_minio_backend_is_chosen_by_settings(make_settings: Callable[..., Settings], s3_server: S3Server) -> None:
    store = open_object_store(make_settings(objects=s3_server.object_settings()))

    assert isinstance(store, MinioObjectStore)
    store.close()
