"""Choose and build the object store adapter the settings name."""

from __future__ import annotations

from shared.config import Settings
from shared.objects.store import ObjectStore


def open_object_store(settings: Settings) -> ObjectStore:
    """The adapter for ``settings.objects.backend``: `LocalObjectStore` on
    ``settings.objects_root`` or `MinioObjectStore` on ``settings.objects``.

    No network I/O happens here; call it once per process (after a fork), and call
    `ensure_bucket` at start-up to fail fast on a wrong endpoint or credentials.
    Raises `ConfigError` for an invalid MinIO endpoint.
    """
    if settings.objects.backend == "minio":
        from shared.objects.minio import MinioObjectStore  # the SDK is only imported when used

        return MinioObjectStore(settings.objects)
    from shared.objects.local import LocalObjectStore

    return LocalObjectStore(settings.objects_root)
