"""What only the MinIO adapter promises: error translation, secrecy, versions, fork safety."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from minio import Minio
from minio.versioningconfig import ENABLED, VersioningConfig

from shared.errors import (
    ConfigError,
    ObjectNotFound,
    OmnibindError,
    PermanentError,
    StorageUnavailable,
    TransientError,
)
from shared.events import ObjectRef
from shared.objects.minio import MinioObjectStore
from tests.support.s3_server import S3Server, free_loopback_port, running_s3_server

MakeStore = Callable[..., MinioObjectStore]
SECRET = "sentinel-Secret-9f8e7d6c"


def _raw_client(server: S3Server) -> Minio:
    """An SDK client for setting up what the adapter does not do (versioning, odd headers)."""
    return Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        region=server.region,
    )


def _everything_said_about(error: BaseException) -> str:
    """str, repr and the full traceback with its chained causes."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


# -- unreachable and misbehaving servers -------------------------------------------------


@pytest.fixture
def unreachable(make_minio_store: MakeStore) -> MinioObjectStore:
    """A store pointed at a loopback port nothing listens on."""
    return make_minio_store(endpoint=f"127.0.0.1:{free_loopback_port()}", secret_key=SECRET)


@pytest.mark.parametrize("operation", ["ensure_bucket", "put", "get", "stat", "delete"])
def test_unreachable_server_raises_storage_unavailable(unreachable: MinioObjectStore, operation: str) -> None:
    ref = ObjectRef(bucket="uploads", key="k")
    calls: dict[str, Callable[[], object]] = {
        "ensure_bucket": lambda: unreachable.ensure_bucket("uploads"),
        "put": lambda: unreachable.put("uploads", "k", b"x"),
        "get": lambda: unreachable.get(ref, max_bytes=10),
        "stat": lambda: unreachable.stat(ref),
        "delete": lambda: unreachable.delete(ref),
    }

    with pytest.raises(StorageUnavailable) as caught:
        calls[operation]()

    assert isinstance(caught.value, TransientError)
    assert caught.value.reason == "storage_unavailable"


class _CannedHandler(BaseHTTPRequestHandler):
    """Answers every request with the server's canned status, body and delay."""

    server: _CannedServer

    def _answer(self) -> None:
        time.sleep(self.server.delay_s)  # a slow server, on purpose
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.server.body)

    do_GET = do_HEAD = do_PUT = do_DELETE = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _CannedServer(ThreadingHTTPServer):
    daemon_threads = True
    status = 200
    content_type = "application/xml"
    body = b""
    delay_s = 0.0

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and hung up is what some tests want


@pytest.fixture
def canned_server(make_minio_store: MakeStore) -> Iterator[Callable[..., MinioObjectStore]]:
    """Factory: a loopback HTTP server giving one fixed answer, and a store pointed at it."""
    servers: list[_CannedServer] = []

    def factory(
        status: int, body: bytes, content_type: str = "application/xml", delay_s: float = 0.0
    ) -> MinioObjectStore:
        server = _CannedServer(("127.0.0.1", 0), _CannedHandler)
        server.status, server.body, server.content_type, server.delay_s = status, body, content_type, delay_s
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return make_minio_store(endpoint=f"127.0.0.1:{server.server_address[1]}", retries=0, read_timeout_s=0.5)

    yield factory
    for server in servers:
        server.shutdown()
        server.server_close()


def _s3_error(code: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>canned</Message>'
        "<Resource>/uploads/k</Resource><RequestId>1</RequestId></Error>"
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected", "reason"),
    [
        (503, _s3_error("SlowDown"), "application/xml", StorageUnavailable, "storage_unavailable"),
        (500, _s3_error("InternalError"), "application/xml", StorageUnavailable, "storage_unavailable"),
        (502, b"<html>bad gateway</html>", "text/html", StorageUnavailable, "storage_unavailable"),
        (403, _s3_error("AccessDenied"), "application/xml", StorageUnavailable, "storage_access_denied"),
        (403, _s3_error("SignatureDoesNotMatch"), "application/xml", StorageUnavailable, "storage_access_denied"),
        (400, _s3_error("InvalidArgument"), "application/xml", PermanentError, "storage_rejected"),
        (404, _s3_error("NoSuchKey"), "application/xml", ObjectNotFound, "object_not_found"),
        (404, _s3_error("NoSuchVersion"), "application/xml", ObjectNotFound, "object_not_found"),
        (404, b"<html>not found</html>", "text/html", StorageUnavailable, "storage_unavailable"),
    ],
    ids=[
        "503-slowdown",
        "500-internal",
        "502-html-proxy",
        "403-denied",
        "403-bad-signature",
        "400-invalid-argument",
        "404-no-such-key",
        "404-no-such-version",
        "404-html-not-s3",
    ],
)
def test_server_answers_are_translated(
    canned_server: Callable[..., MinioObjectStore],
    status: int,
    body: bytes,
    content_type: str,
    expected: type[OmnibindError],
    reason: str,
) -> None:
    store = canned_server(status, body, content_type)

    with pytest.raises(expected) as caught:
        store.get(ObjectRef(bucket="uploads", key="k"), max_bytes=10)

    assert caught.value.reason == reason
    assert caught.value.__cause__ is not None  # the library's exception stays chained


def test_a_server_that_does_not_answer_times_out_as_storage_unavailable(
    canned_server: Callable[..., MinioObjectStore],
) -> None:
    store = canned_server(200, b"late", delay_s=3.0)  # read timeout is 0.5 s

    with pytest.raises(StorageUnavailable):
        store.get(ObjectRef(bucket="uploads", key="k"), max_bytes=10)


@pytest.fixture(scope="module")
def strict_s3_server() -> Iterator[S3Server]:
    """An S3 server that checks credentials like IAM and knows none of ours."""
    with running_s3_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:
        yield server


@pytest.fixture
def denied(make_minio_store: MakeStore, strict_s3_server: S3Server) -> MinioObjectStore:
    return make_minio_store(endpoint=strict_s3_server.endpoint, secret_key=SECRET)


def test_refused_credentials_raise_storage_unavailable_with_access_denied_reason(denied: MinioObjectStore) -> None:
    with pytest.raises(StorageUnavailable) as caught:
        denied.put("uploads", "k", b"x")

    assert caught.value.reason == "storage_access_denied"
    assert "refused our credentials" in str(caught.value)


# -- secrecy -----------------------------------------------------------------------------


def test_secret_key_is_not_in_the_stores_repr(make_minio_store: MakeStore) -> None:
    store = make_minio_store(secret_key=SECRET)

    assert SECRET not in repr(store)
    assert SECRET not in str(store)


def test_secret_key_is_not_in_errors_or_logs(
    make_minio_store: MakeStore,
    s3_server: S3Server,
    unreachable: MinioObjectStore,
    denied: MinioObjectStore,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reachable = make_minio_store()  # the server's own secret: a real server checks it
    reachable.ensure_bucket(bucket)
    attempts: list[Callable[[], object]] = [
        lambda: unreachable.put(bucket, "k", b"x"),
        lambda: denied.get(ObjectRef(bucket=bucket, key="k"), max_bytes=10),
        lambda: reachable.get(ObjectRef(bucket=bucket, key="missing"), max_bytes=10),
    ]
    said: list[str] = []

    with caplog.at_level(logging.DEBUG):
        for attempt in attempts:
            with pytest.raises(OmnibindError) as caught:
                attempt()
            said.append(_everything_said_about(caught.value))

    assert len(said) == 3
    for secret in (SECRET, s3_server.secret_key):
        assert not [text for text in said if secret in text]
        assert secret not in caplog.text


def test_an_endpoint_that_is_not_host_port_is_a_config_error(make_minio_store: MakeStore) -> None:
    with pytest.raises(ConfigError) as caught:
        make_minio_store(endpoint="http://minio:9000/some/path", secret_key=SECRET)

    assert "OMNIBIND_OBJECTS__ENDPOINT" in str(caught.value)
    assert SECRET not in _everything_said_about(caught.value)


# -- versions and exact bytes ------------------------------------------------------------


def test_versioned_bucket_refs_pin_the_bytes_they_were_made_for(
    make_minio_store: MakeStore, s3_server: S3Server, bucket: str
) -> None:
    store = make_minio_store()
    store.ensure_bucket(bucket)
    _raw_client(s3_server).set_bucket_versioning(bucket, VersioningConfig(ENABLED))

    old = store.put(bucket, "k", b"old bytes")
    new = store.put(bucket, "k", b"new bytes!")

    assert old.version_id and new.version_id and old.version_id != new.version_id
    assert store.get(old, max_bytes=100) == b"old bytes"
    assert store.get(new, max_bytes=100) == b"new bytes!"
    assert store.stat(old).size == len(b"old bytes")
    assert store.stat(ObjectRef(bucket=bucket, key="k")).version_id == new.version_id


def test_deleting_one_version_keeps_the_others(make_minio_store: MakeStore, s3_server: S3Server, bucket: str) -> None:
    store = make_minio_store()
    store.ensure_bucket(bucket)
    _raw_client(s3_server).set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    old = store.put(bucket, "k", b"old")
    new = store.put(bucket, "k", b"new")

    store.delete(new)

    assert store.get(ObjectRef(bucket=bucket, key="k"), max_bytes=10) == b"old"
    assert store.stat(old).version_id == old.version_id


def test_a_missing_version_is_not_found(make_minio_store: MakeStore, s3_server: S3Server, bucket: str) -> None:
    store = make_minio_store()
    store.ensure_bucket(bucket)
    _raw_client(s3_server).set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    ref = store.put(bucket, "k", b"x")

    with pytest.raises(ObjectNotFound):
        store.get(ref.model_copy(update={"version_id": "00000000-0000-0000-0000-000000000000"}), max_bytes=10)


def test_objects_up_to_one_part_get_the_md5_etag(make_minio_store: MakeStore, bucket: str) -> None:
    store = make_minio_store()
    data = os.urandom(6 * 1024 * 1024)  # more than S3's 5 MiB minimum part, less than our part size

    ref = store.put(bucket, "six-mib", data)

    assert ref.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert store.stat(ref).etag == ref.etag


def test_objects_above_the_part_size_are_uploaded_in_parts_and_read_back_whole(
    make_minio_store: MakeStore, bucket: str
) -> None:
    part = 5 * 1024 * 1024  # S3's smallest part
    store = make_minio_store(part_size_bytes=part)
    data = os.urandom(2 * part + 12345)

    ref = store.put(bucket, "three parts.bin", io.BytesIO(data))

    assert ref.etag is not None and ref.etag.strip('"').endswith("-3")  # S3's multipart etag: md5-of-md5s-<parts>
    assert ref.size == len(data)
    assert store.get(ref, max_bytes=len(data)) == data


def test_get_returns_the_stored_bytes_without_decoding_content_encoding(
    make_minio_store: MakeStore, s3_server: S3Server, bucket: str
) -> None:
    store = make_minio_store()
    store.ensure_bucket(bucket)
    compressed = gzip.compress(b"hello " * 1000)
    _raw_client(s3_server).put_object(
        bucket, "k.gz", io.BytesIO(compressed), len(compressed), metadata={"Content-Encoding": "gzip"}
    )

    data = store.get(ObjectRef(bucket=bucket, key="k.gz"), max_bytes=len(compressed))

    assert data == compressed


# -- buckets and processes ---------------------------------------------------------------


def test_a_bucket_deleted_behind_our_back_is_recreated_on_retry(
    make_minio_store: MakeStore, s3_server: S3Server, bucket: str
) -> None:
    store = make_minio_store()
    store.put(bucket, "k", b"x")
    raw = _raw_client(s3_server)
    raw.remove_object(bucket, "k")
    raw.remove_bucket(bucket)

    with pytest.raises(StorageUnavailable):
        store.put(bucket, "k", b"y")
    ref = store.put(bucket, "k", b"y")

    assert store.get(ref, max_bytes=10) == b"y"


def test_ensure_bucket_from_many_stores_at_once_succeeds(make_minio_store: MakeStore, bucket: str) -> None:
    stores = [make_minio_store() for _ in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def create(store: MinioObjectStore) -> None:
        start.wait()
        try:
            store.ensure_bucket(bucket)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []


def _use_after_fork(store: MinioObjectStore, bucket: str) -> None:
    """Runs in the forked child: exits non-zero if the client is the parent's or fails."""
    inherited = store._client
    assert store._minio() is not inherited, "the child reused the parent's client"
    ref = store.put(bucket, "from-child", b"child bytes")
    assert store.get(ref, max_bytes=100) == b"child bytes"


def test_a_store_created_before_fork_works_in_the_child_with_its_own_client(
    make_minio_store: MakeStore, bucket: str
) -> None:
    store = make_minio_store()
    store.put(bucket, "from-parent", b"parent bytes")  # the parent's pool is in use
    child = multiprocessing.get_context("fork").Process(target=_use_after_fork, args=(store, bucket))

    child.start()
    child.join(timeout=60)

    assert child.exitcode == 0
    assert store.get(ObjectRef(bucket=bucket, key="from-child"), max_bytes=100) == b"child bytes"


def test_a_known_bucket_is_not_checked_again_on_every_put(
    make_minio_store: MakeStore, s3_server: S3Server, bucket: str
) -> None:
    raw = _raw_client(s3_server)
    raw.make_bucket(bucket)  # exists before the store first sees it
    store = make_minio_store()
    store.put(bucket, "first", b"x")
    raw.remove_object(bucket, "first")
    raw.remove_bucket(bucket)

    with pytest.raises(StorageUnavailable, match="disappeared"):  # no existence check before the PUT
        store.put(bucket, "second", b"y")


def test_list_refs_in_a_versioned_bucket_names_every_version_and_delete_marker(
    make_minio_store: MakeStore, s3_server: S3Server, bucket: str
) -> None:
    store = make_minio_store()
    store.ensure_bucket(bucket)
    _raw_client(s3_server).set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    old = store.put(bucket, "acme:u1/a", b"old")
    new = store.put(bucket, "acme:u1/a", b"new")
    store.delete(ObjectRef(bucket=bucket, key="acme:u1/a"))  # a delete marker on top
    store.put(bucket, "beta:u1/a", b"beta's")

    listed = list(store.list_refs(bucket, "acme:"))

    assert {ref.version_id for ref in listed} >= {old.version_id, new.version_id}
    assert len(listed) == 3 and {ref.key for ref in listed} == {"acme:u1/a"}, "two versions and the marker"
    for ref in listed:  # what a purge does: every version goes, so nothing can be restored
        store.delete(ref)
    assert list(store.list_refs(bucket, "acme:")) == []
    assert [ref.key for ref in store.list_refs(bucket, "")] == ["beta:u1/a"]
