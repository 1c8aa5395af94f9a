"""The object store contract: every test here runs against every adapter (see `store`)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from shared.errors import InvalidKey, LimitExceeded, ObjectNotFound, PermanentError
from shared.events import ObjectRef
from shared.objects.store import ObjectStore

UNSAFE_KEYS = [
    "../escape",
    "a/../../escape",
    "/absolute",
    "a//b",
    "trailing/",
    ".",
    "..",
    "a/./b",
    "back\\slash",
    "nul\x00byte",
    "tab\tchar",
    "new\nline",
    "del\x7fchar",
    "c1\x85char",
    " ",
    "é" * 600,  # 600 characters but 1200 bytes of UTF-8
    "s" * 256,  # one segment longer than a file name may be
    "lone\ud800surrogate",
]
UNICODE_KEYS = [
    "with space/and more spaces.txt",
    "accents/éàü ñ.jpg",
    "cjk/文件/画像.png",
    "emoji/🎉 party 👩‍👩‍👧.wav",
    ".hidden",
    "deep/a/b/c/d/e/f.bin",
    "x" * 255,
]


def _ref(bucket: str, key: str, **fields: Any) -> ObjectRef:
    return ObjectRef(bucket=bucket, key=key, **fields)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class _ReadOnlyStream(io.RawIOBase):
    """A stream that cannot seek, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"\x00\x01binary\x00with NULs\xff\x00", b"", os.urandom(3 * 1024 * 1024 + 7)],
    ids=["binary-with-nuls", "empty", "3MiB-random"],
)
def test_put_then_get_returns_the_same_bytes(store: ObjectStore, bucket: str, data: bytes) -> None:
    ref = store.put(bucket, "blob.bin", data)

    assert store.get(ref, max_bytes=len(data)) == data


@pytest.mark.parametrize("key", UNICODE_KEYS)
def test_unicode_keys_round_trip(store: ObjectStore, bucket: str, key: str) -> None:
    ref = store.put(bucket, key, key.encode())

    assert ref.key == key
    assert store.get(_ref(bucket, key), max_bytes=10_000) == key.encode()
    assert store.stat(_ref(bucket, key)).size == len(key.encode())


@pytest.mark.parametrize("make_stream", [io.BytesIO, _ReadOnlyStream], ids=["seekable", "not-seekable"])
def test_put_accepts_a_stream(store: ObjectStore, bucket: str, make_stream: Callable[[bytes], Any]) -> None:
    data = os.urandom(200_000)

    ref = store.put(bucket, "streamed", make_stream(data))

    assert ref.size == len(data)
    assert ref.etag == _md5(data)
    assert store.get(ref, max_bytes=len(data)) == data


def test_put_of_a_stream_stores_from_its_current_position(store: ObjectStore, bucket: str) -> None:
    stream = io.BytesIO(b"skip-this|keep this")
    stream.seek(len(b"skip-this|"))

    ref = store.put(bucket, "tail", stream)

    assert store.get(ref, max_bytes=100) == b"keep this"
    assert ref.size == len(b"keep this")


# -- refs --------------------------------------------------------------------------------


def test_put_returns_a_complete_ref(store: ObjectStore, bucket: str) -> None:
    data = b"some image bytes"

    ref = store.put(bucket, "img/cat.jpg", data, content_type="image/jpeg")

    assert (ref.bucket, ref.key, ref.size, ref.content_type) == (bucket, "img/cat.jpg", len(data), "image/jpeg")
    assert ref.etag == _md5(data)  # S3's etag of a single-part upload


def test_stat_agrees_with_put(store: ObjectStore, bucket: str) -> None:
    put_ref = store.put(bucket, "a.txt", b"hello", content_type="text/plain; charset=utf-8")

    stat_ref = store.stat(_ref(bucket, "a.txt"))

    assert stat_ref.etag == put_ref.etag
    assert stat_ref.size == put_ref.size == 5
    assert stat_ref.content_type == "text/plain; charset=utf-8"
    assert stat_ref.version_id == put_ref.version_id


def test_default_content_type_is_octet_stream(store: ObjectStore, bucket: str) -> None:
    ref = store.put(bucket, "raw", b"\x00")

    assert ref.content_type == "application/octet-stream"
    assert store.stat(ref).content_type == "application/octet-stream"


def test_content_type_and_metadata_are_preserved(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"x", content_type="audio/wav", metadata={"tenant": "acme", "upload-id": "u_1"})

    info = store.head(_ref(bucket, "k"))

    assert info.ref.content_type == "audio/wav"
    assert dict(info.metadata) == {"tenant": "acme", "upload-id": "u_1"}


def test_metadata_names_are_lower_cased(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"x", metadata={"Tenant_ID": "T1"})

    assert dict(store.head(_ref(bucket, "k")).metadata) == {"tenant_id": "T1"}


@pytest.mark.parametrize(
    "metadata",
    [{"tenant": "café"}, {"bad name": "x"}, {"x": "line\nbreak"}, {"big": "v" * 3000}, {"A": "1", "a": "2"}],
    ids=["non-ascii-value", "space-in-name", "control-in-value", "too-big", "duplicate-name"],
)
def test_invalid_metadata_is_refused(store: ObjectStore, bucket: str, metadata: dict[str, str]) -> None:
    with pytest.raises(PermanentError) as caught:
        store.put(bucket, "k", b"x", metadata=metadata)

    assert caught.value.reason == "invalid_metadata"


@pytest.mark.parametrize("content_type", ["jpeg", "image/jpeg\r\nX-Evil: 1", "image/jpé"])
def test_invalid_content_type_is_refused(store: ObjectStore, bucket: str, content_type: str) -> None:
    with pytest.raises(PermanentError) as caught:
        store.put(bucket, "k", b"x", content_type=content_type)

    assert caught.value.reason == "invalid_metadata"


# -- size limit --------------------------------------------------------------------------


def test_get_allows_an_object_of_exactly_max_bytes(store: ObjectStore, bucket: str) -> None:
    ref = store.put(bucket, "k", b"12345")

    assert store.get(ref, max_bytes=5) == b"12345"


def test_get_of_an_object_over_max_bytes_raises_too_large(store: ObjectStore, bucket: str) -> None:
    ref = store.put(bucket, "k", b"123456")

    with pytest.raises(LimitExceeded) as caught:
        store.get(ref, max_bytes=5)

    assert caught.value.reason == "too_large"


def test_empty_object_fits_a_zero_byte_limit(store: ObjectStore, bucket: str) -> None:
    ref = store.put(bucket, "k", b"")

    assert store.get(ref, max_bytes=0) == b""


# -- missing objects ---------------------------------------------------------------------


def test_get_of_a_missing_object_raises_object_not_found(store: ObjectStore, bucket: str) -> None:
    store.ensure_bucket(bucket)

    with pytest.raises(ObjectNotFound):
        store.get(_ref(bucket, "nope"), max_bytes=10)


def test_get_from_a_missing_bucket_raises_object_not_found(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFound):
        store.get(_ref(bucket, "nope"), max_bytes=10)


def test_stat_of_a_missing_object_raises_object_not_found(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "other", b"x")

    with pytest.raises(ObjectNotFound):
        store.stat(_ref(bucket, "nope"))


def test_prefix_of_a_key_is_not_an_object(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "dir/file", b"x")

    with pytest.raises(ObjectNotFound):
        store.get(_ref(bucket, "dir"), max_bytes=10)


# -- unsafe names ------------------------------------------------------------------------


@pytest.mark.parametrize("key", UNSAFE_KEYS)
@pytest.mark.parametrize("operation", ["put", "get", "stat", "head", "delete"])
def test_unsafe_keys_are_refused_by_every_operation(store: ObjectStore, bucket: str, key: str, operation: str) -> None:
    store.ensure_bucket(bucket)
    ref = ObjectRef.model_construct(bucket=bucket, key=key)  # skip the model's own length check
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: store.put(bucket, key, b"x"),
        "get": lambda: store.get(ref, max_bytes=10),
        "stat": lambda: store.stat(ref),
        "head": lambda: store.head(ref),
        "delete": lambda: store.delete(ref),
    }

    with pytest.raises(InvalidKey):
        calls[operation]()


def test_empty_key_is_refused(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(bucket, "", b"x")


@pytest.mark.parametrize("bad_bucket", ["UPPER", "ab", ".omnibind-meta", "a..b", "192.168.1.1", "under_score"])
def test_invalid_bucket_names_are_refused(store: ObjectStore, bad_bucket: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(bad_bucket, "k", b"x")
    with pytest.raises(InvalidKey):
        store.get(ObjectRef(bucket=bad_bucket, key="k"), max_bytes=10)


# -- overwrite and delete ----------------------------------------------------------------


def test_overwrite_replaces_content_and_etag(store: ObjectStore, bucket: str) -> None:
    first = store.put(bucket, "k", b"first", content_type="text/plain")
    second = store.put(bucket, "k", b"second version", content_type="image/png")

    assert store.get(_ref(bucket, "k"), max_bytes=100) == b"second version"
    assert second.etag != first.etag
    stat_ref = store.stat(_ref(bucket, "k"))
    assert (stat_ref.etag, stat_ref.size, stat_ref.content_type) == (second.etag, 14, "image/png")


def test_get_after_delete_raises_object_not_found(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"x")

    store.delete(_ref(bucket, "k"))

    with pytest.raises(ObjectNotFound):
        store.get(_ref(bucket, "k"), max_bytes=10)
    with pytest.raises(ObjectNotFound):
        store.stat(_ref(bucket, "k"))


def test_delete_of_a_missing_object_is_fine(store: ObjectStore, bucket: str) -> None:
    store.ensure_bucket(bucket)

    store.delete(_ref(bucket, "never-existed"))
    store.delete(_ref(bucket, "never/existed/either"))


def test_delete_in_a_missing_bucket_is_fine(store: ObjectStore, bucket: str) -> None:
    store.delete(_ref(bucket, "k"))


def test_delete_leaves_other_keys_alone(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "dir/a", b"a")
    store.put(bucket, "dir/b", b"b")

    store.delete(_ref(bucket, "dir/a"))

    assert store.get(_ref(bucket, "dir/b"), max_bytes=10) == b"b"


def test_a_deleted_prefix_can_become_an_object(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "name/child", b"child")
    store.delete(_ref(bucket, "name/child"))

    store.put(bucket, "name", b"now an object")

    assert store.get(_ref(bucket, "name"), max_bytes=100) == b"now an object"


# -- buckets -----------------------------------------------------------------------------


def test_put_creates_the_bucket(store: ObjectStore, bucket: str) -> None:
    ref = store.put(bucket, "first", b"x")

    assert store.get(ref, max_bytes=1) == b"x"


def test_ensure_bucket_is_idempotent(store: ObjectStore, bucket: str) -> None:
    store.ensure_bucket(bucket)
    store.put(bucket, "k", b"kept")

    store.ensure_bucket(bucket)

    assert store.get(_ref(bucket, "k"), max_bytes=10) == b"kept"


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_puts_of_distinct_keys_from_threads(store: ObjectStore, bucket: str) -> None:
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for index in range(5):
                key = f"shared/prefix/w{worker}-{index}"
                store.put(bucket, key, key.encode() * 100)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for worker in range(8):
        for index in range(5):
            key = f"shared/prefix/w{worker}-{index}"
            assert store.get(_ref(bucket, key), max_bytes=100_000) == key.encode() * 100


def test_store_satisfies_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_list_refs_names_the_keys_under_a_prefix_in_order_from_a_cursor(store: ObjectStore, bucket: str) -> None:
    for key in ("acme:b/2.txt", "acme:a/1.txt", "acmex/3.txt", "beta:a/1.txt", "acme:c"):
        store.put(bucket, key, b"x")

    listed = [ref.key for ref in store.list_refs(bucket, "acme:")]
    resumed = [ref.key for ref in store.list_refs(bucket, "acme:", start_after="acme:a/1.txt")]

    assert listed == ["acme:a/1.txt", "acme:b/2.txt", "acme:c"]
    assert resumed == ["acme:b/2.txt", "acme:c"]
    for ref in store.list_refs(bucket, "acme:"):
        store.delete(ref)
    assert list(store.list_refs(bucket, "acme:")) == []
    assert [ref.key for ref in store.list_refs(bucket, "")] == ["acmex/3.txt", "beta:a/1.txt"]
    assert list(store.list_refs(f"{bucket}-missing", "")) == []
