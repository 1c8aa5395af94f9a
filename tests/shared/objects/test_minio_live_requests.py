"""The MinIO adapter's requests against a live MinIO: metadata that the SDK would send as
real headers is refused before any I/O, and reads hand their connection back to the pool."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from minio import Minio
from minio.error import S3Error

from shared.config import Settings
from shared.errors import LimitExceeded, ObjectNotFound, PermanentError
from shared.events import ObjectRef
from shared.objects.factory import open_object_store
from shared.objects.minio import MinioObjectStore
from tests.support.minio_server import MinioServer

HEADER_NAMES = [
    "content-type",
    "Content-Type",
    "cache-control",
    "content-encoding",
    "content-disposition",
    "content-language",
    "expires",
    "x-amz-storage-class",
    "X-Amz-Meta-Album",
    "x-amz-tagging",
]
READS = 20


@pytest.fixture
def live_store(
    make_settings: Callable[..., Settings], minio_server: MinioServer, bucket: str
) -> Iterator[MinioObjectStore]:
    store = open_object_store(make_settings(objects=minio_server.object_settings(bucket=bucket)))
    assert isinstance(store, MinioObjectStore)
    yield store
    store.close()


def test_a_second_content_type_from_metadata_breaks_the_signature_in_the_sdk(
    minio_server: MinioServer, bucket: str
) -> None:
    # Why such names are refused: the SDK sends them as the header itself, next to its own.
    sdk = Minio(minio_server.endpoint, minio_server.access_key, minio_server.secret_key, secure=False)
    sdk.make_bucket(bucket)
    with pytest.raises(S3Error) as caught:
        sdk.put_object(
            bucket, "a.txt", io.BytesIO(b"hi"), 2, content_type="text/plain", metadata={"content-type": "image/png"}
        )
    assert caught.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("name", HEADER_NAMES)
def test_metadata_named_like_an_object_header_is_refused_before_anything_is_stored(
    live_store: MinioObjectStore, bucket: str, name: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        live_store.put(bucket, "a.txt", b"hi", content_type="text/plain", metadata={name: "image/png"})

    assert caught.value.reason == "invalid_metadata"
    assert repr(name) in caught.value.message
    with pytest.raises(ObjectNotFound):
        live_store.stat(ObjectRef(bucket=bucket, key="a.txt"))


def test_ordinary_metadata_is_still_stored(live_store: MinioObjectStore, bucket: str) -> None:
    ref = live_store.put(bucket, "a.txt", b"hi", metadata={"album": "summer", "content-kind": "note"})
    assert live_store.head(ref).metadata == {"album": "summer", "content-kind": "note"}


def idle_sockets(store: MinioObjectStore, minio_server: MinioServer) -> list[object]:
    """Local addresses of the open connections waiting in the store's pool for the server
    (a connection closed before it was released is in the pool without a socket)."""
    host, port = minio_server.endpoint.rsplit(":", 1)
    pool = store._http.connection_from_host(host, int(port), scheme="http")
    idle = list(pool.pool.queue) if pool.pool is not None else []
    return [conn.sock.getsockname() for conn in idle if conn is not None and conn.sock is not None]


def read_with_sockets(store: MinioObjectStore, minio_server: MinioServer, ref: ObjectRef) -> tuple[bytes, object]:
    data = store.get(ref, max_bytes=1_000_000)
    (address,) = idle_sockets(store, minio_server)
    return data, address


def test_many_reads_through_one_store_reuse_one_connection(
    live_store: MinioObjectStore, minio_server: MinioServer, bucket: str
) -> None:
    ref = live_store.put(bucket, "a.bin", b"x" * 100_000)

    reads = [read_with_sockets(live_store, minio_server, ref) for _ in range(READS)]

    assert all(data == b"x" * 100_000 for data, _ in reads)
    assert len({address for _, address in reads}) == 1, "every read went over the same TCP connection"


def test_a_read_refused_as_too_large_does_not_poison_the_pool(
    live_store: MinioObjectStore, minio_server: MinioServer, bucket: str
) -> None:
    big = live_store.put(bucket, "big.bin", b"x" * 3_000_000)
    small = live_store.put(bucket, "small.bin", b"small")

    with pytest.raises(LimitExceeded) as caught:
        live_store.get(big, max_bytes=1_000_000)
    assert caught.value.reason == "too_large"
    assert idle_sockets(live_store, minio_server) == [], "its unread body made the connection unusable"

    reads = [read_with_sockets(live_store, minio_server, small) for _ in range(READS)]
    assert [data for data, _ in reads] == [b"small"] * READS
    assert len({address for _, address in reads}) == 1
