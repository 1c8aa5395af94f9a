"""Object store adapter for MinIO or any S3-compatible server (the `minio` SDK).

One adapter per process: the SDK client (and its urllib3 connection pool) is created in the
constructor, which does no network I/O, and re-created if the adapter is used in a child
process after a fork, so pooled sockets are never shared between processes.

Errors are translated into the `shared.errors` tree:

========================================================  ==================================
S3 code / failure                                          raised
========================================================  ==================================
NoSuchKey, NoSuchBucket, NoSuchVersion (reads)             `ObjectNotFound`
connection refused/reset, timeouts, HTTP 5xx, SlowDown,    `StorageUnavailable`
non-S3 answers (a proxy's HTML error page)                 (reason ``storage_unavailable``)
AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,   `StorageUnavailable`
clock skew, bucket owned by another account                (reason ``storage_access_denied``)
any other 4xx the server refuses                           `PermanentError` (``storage_rejected``)
========================================================  ==================================

Access errors are *transient* on purpose: they come from misconfiguration (credentials,
policies) that an operator fixes without anyone re-uploading, so uploads in flight should be
retried, not dead-lettered. They carry their own reason so they are easy to alert on, and
workers fail fast at start-up by calling `ensure_bucket`.

The secret key never appears in a repr, a message or a log line this module writes.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator, Mapping
from typing import BinaryIO, NoReturn, cast

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.util import Retry, Timeout

from shared.config import ObjectStoreSettings
from shared.errors import (
    ConfigError,
    LimitExceeded,
    ObjectNotFound,
    OmnibindError,
    PermanentError,
    StorageUnavailable,
)
from shared.events import ObjectRef
from shared.objects.keys import validate_bucket, validate_content_type, validate_key, validate_metadata
from shared.objects.store import ObjectInfo

CHUNK_BYTES = 1024 * 1024
_METADATA_PREFIX = "x-amz-meta-"
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "BucketAlreadyExists",  # the name is taken by another account: a configuration problem
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
    }
)
_BUSY = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "OperationAborted"})
_RETRY_STATUSES = (500, 502, 503, 504)
_BACKOFF_FACTOR_S = 0.2


class MinioObjectStore:
    """`ObjectStore` on an S3 API. Thread-safe; create one per process."""

    def __init__(self, settings: ObjectStoreSettings) -> None:
        """Build the client from `settings` (no network I/O).

        Raises `ConfigError` when the endpoint is not ``host[:port]``.
        """
        self._settings = settings
        self._lock = threading.Lock()
        self._ready_buckets: set[str] = set()
        self._pid = os.getpid()
        self._http, self._client = self._connect()

    def __repr__(self) -> str:
        return f"MinioObjectStore(endpoint={self._settings.endpoint!r}, secure={self._settings.secure})"

    # -- the port -------------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists. Idempotent, and safe when several processes
        race to create it.

        Raises `InvalidKey`, `StorageUnavailable` (also for access errors, see module doc).
        """
        validate_bucket(bucket)
        client = self._minio()
        with self._translated(f"create bucket {bucket!r}"):
            if not client.bucket_exists(bucket):
                try:
                    client.make_bucket(bucket)
                except S3Error as exc:
                    if exc.code != "BucketAlreadyOwnedByYou":  # another process won the race
                        raise
        self._ready_buckets.add(bucket)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectRef:
        """Upload `data` (creating the bucket on first use) and return its ref with the
        server's etag and version id.

        Raises `InvalidKey`, `PermanentError` (``invalid_metadata``, ``storage_rejected``),
        `StorageUnavailable`.
        """
        validate_bucket(bucket)
        validate_key(key)
        content_type = validate_content_type(content_type)
        user_metadata = validate_metadata(metadata)
        if bucket not in self._ready_buckets:
            self.ensure_bucket(bucket)
        stream, length = _as_stream(data)
        counted = _CountingReader(stream)
        client = self._minio()
        try:
            with self._translated(f"put {bucket}/{key}"):
                result = client.put_object(
                    bucket,
                    key,
                    cast(BinaryIO, counted),  # duck-typed: put_object only calls read()
                    length,
                    content_type=content_type,
                    metadata=dict(user_metadata),  # minio prefixes each name with x-amz-meta-
                    # Up to one part is a single PUT, whose etag is the MD5 of the bytes.
                    part_size=self._settings.part_size_bytes,
                )
        except ObjectNotFound as exc:  # the bucket was deleted behind our back
            self._ready_buckets.discard(bucket)
            raise StorageUnavailable(f"bucket {bucket!r} disappeared; it is re-created on retry") from exc
        return ObjectRef(
            bucket=bucket,
            key=key,
            version_id=result.version_id,
            etag=result.etag,
            size=counted.count,
            content_type=content_type,
        )

    def get(self, ref: ObjectRef, *, max_bytes: int) -> bytes:
        """Stream the object (the version in `ref.version_id` if set), refusing anything
        over `max_bytes`: first by its Content-Length, then by counting what arrives.

        Returns the stored bytes exactly (no Content-Encoding decoding).
        Raises `ObjectNotFound`, `LimitExceeded` (reason ``too_large``), `InvalidKey`,
        `StorageUnavailable`.
        """
        validate_bucket(ref.bucket)
        validate_key(ref.key)
        client = self._minio()
        with self._translated(f"get {ref.bucket}/{ref.key}"):
            response = client.get_object(ref.bucket, ref.key, version_id=ref.version_id)
            try:
                data = _read_limited(response, ref, max_bytes)
            except BaseException:
                # Unread bytes are still on the wire: this connection cannot serve another request.
                response.close()
                raise
            finally:
                response.release_conn()
            return data

    def stat(self, ref: ObjectRef) -> ObjectRef:
        """The ref completed with size, etag, version id and content type (see `head`)."""
        return self.head(ref).ref

    def head(self, ref: ObjectRef) -> ObjectInfo:
        """One HEAD request: the completed ref and the object's user metadata.

        Raises `ObjectNotFound`, `InvalidKey`, `StorageUnavailable`.
        """
        validate_bucket(ref.bucket)
        validate_key(ref.key)
        client = self._minio()
        with self._translated(f"stat {ref.bucket}/{ref.key}"):
            found = client.stat_object(ref.bucket, ref.key, version_id=ref.version_id)
        headers = found.metadata or {}
        metadata = {
            name.lower().removeprefix(_METADATA_PREFIX): value
            for name, value in headers.items()
            if name.lower().startswith(_METADATA_PREFIX)
        }
        completed = ref.model_copy(
            update={
                "etag": found.etag,
                "size": found.size,
                "version_id": found.version_id,
                "content_type": found.content_type,
            }
        )
        return ObjectInfo(ref=completed, metadata=metadata)

    def delete(self, ref: ObjectRef) -> None:
        """Delete the object (in a versioned bucket: add a delete marker, or remove exactly
        `ref.version_id` if set). A missing object, version or bucket is fine.

        Raises `InvalidKey`, `StorageUnavailable`.
        """
        validate_bucket(ref.bucket)
        validate_key(ref.key)
        client = self._minio()
        with contextlib.suppress(ObjectNotFound), self._translated(f"delete {ref.bucket}/{ref.key}"):
            client.remove_object(ref.bucket, ref.key, version_id=ref.version_id)

    def list_refs(self, bucket: str, prefix: str, *, start_after: str = "") -> Iterator[ObjectRef]:
        """Every version of every key under `prefix` after `start_after` (ListObjectVersions:
        an unversioned bucket lists each key once, as version ``null``, named here as no
        version). A missing bucket holds nothing. Raises `InvalidKey`, `StorageUnavailable`."""
        validate_bucket(bucket)
        client = self._minio()
        listing = client.list_objects(
            bucket, prefix=prefix, recursive=True, start_after=start_after or None, include_version=True
        )
        with contextlib.suppress(ObjectNotFound), self._translated(f"list {bucket}/{prefix}"):
            for found in listing:
                if found.object_name is None or (start_after and found.object_name <= start_after):
                    continue
                version = found.version_id if found.version_id not in (None, "null") else None
                yield ObjectRef(bucket=bucket, key=found.object_name, version_id=version)

    def close(self) -> None:
        """Close pooled connections."""
        self._http.clear()

    # -- client ---------------------------------------------------------------------------

    def _connect(self) -> tuple[urllib3.PoolManager, Minio]:
        return connect_minio(self._settings)

    def _minio(self) -> Minio:
        """The client of this process (a fresh one in a forked child)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._http, self._client = self._connect()
                    self._pid = os.getpid()
        return self._client

    # -- errors ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn SDK and urllib3 exceptions raised inside into the `shared.errors` tree."""
        try:
            yield
        except OmnibindError:
            raise
        except S3Error as exc:
            self._raise_for_s3_error(action, exc)
        except (ServerError, InvalidResponseError) as exc:
            detail = self._scrub(str(exc))
            raise StorageUnavailable(f"{action}: unexpected answer from {self._where}: {detail}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"{action}: cannot reach {self._where}: {self._scrub(str(exc))}") from exc

    def _raise_for_s3_error(self, action: str, exc: S3Error) -> NoReturn:
        code = exc.code or "?"
        status = exc.response.status if exc.response is not None else 0
        detail = self._scrub(f"{code} (HTTP {status}): {exc.message}")
        if code in _NOT_FOUND:
            raise ObjectNotFound(f"{action}: {detail}") from exc
        if code in _DENIED:
            raise StorageUnavailable(
                f"{action}: {self._where} refused our credentials or policy: {detail}", reason="storage_access_denied"
            ) from exc
        if code in _BUSY or status >= 500:
            raise StorageUnavailable(f"{action}: {self._where} is unavailable: {detail}") from exc
        raise PermanentError(
            f"{action}: {self._where} rejected the request: {detail}", reason="storage_rejected"
        ) from exc

    @property
    def _where(self) -> str:
        return f"object store {self._settings.endpoint}"

    def _scrub(self, text: str) -> str:
        return scrub_secret(self._settings, text)


def scrub_secret(settings: ObjectStoreSettings, text: str) -> str:
    """`text` with the secret key blotted out (defence in depth: S3 never echoes it)."""
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    return text.replace(secret, "**********") if secret else text


def connect_minio(settings: ObjectStoreSettings) -> tuple[urllib3.PoolManager, Minio]:
    """A MinIO SDK client with bounded timeouts and retries, and its connection pool (close
    it with ``pool.clear()``). Raises `ConfigError` for an unusable endpoint or credentials."""
    http = urllib3.PoolManager(
        timeout=Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(
            total=settings.retries,
            backoff_factor=_BACKOFF_FACTOR_S,
            status_forcelist=_RETRY_STATUSES,
            # A server asking for minutes of patience should fail this call now; the
            # task-level retry (with its own backoff) is the place to wait.
            respect_retry_after_header=False,
        ),
    )
    try:
        client = Minio(
            settings.endpoint,
            access_key=settings.access_key.get_secret_value() if settings.access_key else None,
            secret_key=settings.secret_key.get_secret_value() if settings.secret_key else None,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )
    except ValueError as exc:
        raise ConfigError(
            f"OMNIBIND_OBJECTS__ENDPOINT / credentials are invalid: {scrub_secret(settings, str(exc))}"
        ) from None  # the SDK's message may quote its arguments; do not chain it
    return http, client


class _CountingReader:
    """A read-only stream wrapper that counts the bytes handed out."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.count += len(chunk)
        return chunk


def _as_stream(data: bytes | BinaryIO) -> tuple[BinaryIO, int]:
    """`data` as a stream and its length (-1 when unknown: a non-seekable stream)."""
    if isinstance(data, bytes | bytearray):
        return io.BytesIO(data), len(data)
    if data.seekable():
        start = data.tell()
        end = data.seek(0, io.SEEK_END)
        data.seek(start)
        return data, end - start
    return data, -1


def _read_limited(response: urllib3.BaseHTTPResponse, ref: ObjectRef, max_bytes: int) -> bytes:
    """The whole body of `response`, refusing more than `max_bytes` (declared or received)."""
    declared = response.headers.get("content-length")
    if declared is not None and int(declared) > max_bytes:
        raise _too_large(ref, int(declared), max_bytes)
    chunks: list[bytes] = []
    received = 0
    for chunk in response.stream(CHUNK_BYTES, decode_content=False):
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(ref, received, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(ref: ObjectRef, size: int, max_bytes: int) -> LimitExceeded:
    return LimitExceeded(
        f"object {ref.bucket}/{ref.key} is larger than the {max_bytes}-byte limit ({size} bytes or more)",
        reason="too_large",
    )
