"""The object store port: where upload blobs live.

Adapters: `shared.objects.local` (a directory; the embedded default) and
`shared.objects.minio` (MinIO or any S3-compatible server). Every adapter validates keys
with `shared.objects.keys.validate_key` and translates its library's exceptions into the
`shared.errors` tree; the contract suite in ``tests/shared/objects`` runs against each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

from shared.events import ObjectRef


@dataclass(frozen=True)
class ObjectInfo:
    """What `ObjectStore.head` knows about a stored object: its completed ref and the user
    metadata given to `put` (names lower-cased)."""

    ref: ObjectRef
    metadata: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` if it does not exist (idempotent)."""

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectRef:
        """Store `data` (bytes, or a binary stream read from its current position) under
        bucket/key (bucket created if needed) and return a ref with size, etag, content_type
        (default ``application/octet-stream``) and, where the backend versions objects,
        version_id filled in.

        Raises `InvalidKey` for an unsafe bucket or key, `PermanentError` (reason
        ``invalid_metadata``) for a bad content type or metadata, `StorageUnavailable` when
        the backend is down.
        """
        ...

    def get(self, ref: ObjectRef, *, max_bytes: int) -> bytes:
        """Read the object (the version named by `ref.version_id` if set), streaming, and stop
        as soon as more than `max_bytes` arrive.

        Raises `ObjectNotFound`, `LimitExceeded` (reason ``too_large``), `InvalidKey`,
        `StorageUnavailable`.
        """
        ...

    def stat(self, ref: ObjectRef) -> ObjectRef:
        """The ref completed with current size, etag, version_id and content_type.

        Raises `ObjectNotFound`, `InvalidKey`, `StorageUnavailable`.
        """
        ...

    def head(self, ref: ObjectRef) -> ObjectInfo:
        """Like `stat`, plus the object's user metadata (one round trip).

        Raises `ObjectNotFound`, `InvalidKey`, `StorageUnavailable`.
        """
        ...

    def delete(self, ref: ObjectRef) -> None:
        """Remove the object (only the version named by `ref.version_id` if set); deleting a
        missing object is not an error.

        Raises `InvalidKey`, `StorageUnavailable`.
        """

    def list_refs(self, bucket: str, prefix: str, *, start_after: str = "") -> Iterator[ObjectRef]:
        """Every stored object whose key starts with `prefix` and sorts after `start_after`,
        in key order; in a versioned bucket every version of each key (delete markers
        included), each ref naming its version. A missing bucket holds nothing.

        Raises `InvalidKey` (bucket name), `StorageUnavailable`.
        """
        ...

    def close(self) -> None:
        """Release connections (the store must not be used afterwards)."""
