"""Object store adapter for a local directory (the embedded default).

Layout under `root`::

    <bucket>/<key segments...>          the bytes, exactly as stored (plain files)
    .omnibind-meta/<bucket>/<key...>    sidecar JSON: etag, size, content type, metadata
    .omnibind-tmp/                      files being written (renamed into place when complete)
    .omnibind-locks/NN.lock             striped locks serialising writers of the same key

Bucket names cannot start with ``.``, so none of the hidden trees is reachable as a bucket,
and keys stay inside their bucket directory: they are validated, and the resolved path
(symlinks followed) must still lie inside the bucket before anything is opened.

Writes go to a temp file that is fsynced and then atomically renamed over the target, so a
reader sees the old or the new bytes, never a mix. A sidecar records the identity of the data
file it describes (inode, size, mtime); when that does not match (a file put there by hand, a
writer that crashed between the two renames) `head` recomputes the etag from the bytes and
reports the default content type, so it never returns a stale etag. Several processes may
read and write the same root at once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from shared.errors import InvalidKey, LimitExceeded, ObjectNotFound, StorageUnavailable
from shared.events import ObjectRef
from shared.file_locks import blocking_lock
from shared.objects.keys import (
    DEFAULT_CONTENT_TYPE,
    validate_bucket,
    validate_content_type,
    validate_key,
    validate_metadata,
)
from shared.objects.store import ObjectInfo

META_DIR = ".omnibind-meta"
TMP_DIR = ".omnibind-tmp"
LOCK_DIR = ".omnibind-locks"
CHUNK_BYTES = 1024 * 1024
LOCK_STRIPES = 64
_INSTALL_ATTEMPTS = 10  # a concurrent delete may prune the parent directory between mkdir and rename


@dataclass(frozen=True)
class _Written:
    """A complete temp file and what the sidecar must record about it."""

    path: Path
    etag: str
    size: int
    identity: tuple[int, int, int]  # (inode, size, mtime_ns): survives the rename


class LocalObjectStore:
    """`ObjectStore` on a directory tree; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    # -- the port -------------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket directory (idempotent; safe when several processes race)."""
        validate_bucket(bucket)
        with _os_errors(f"create bucket {bucket!r}"):
            (self._root / bucket).mkdir(parents=True, exist_ok=True)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectRef:
        """Store `data` atomically and return its ref (etag = MD5 hex, version_id None).

        Raises `InvalidKey` (also when the key collides with a "directory" of other keys,
        e.g. ``a`` when ``a/b`` exists), `PermanentError` (``invalid_metadata``),
        `StorageUnavailable` (disk full, permissions).
        """
        path = self._data_path(bucket, key)
        content_type = validate_content_type(content_type)
        sidecar_meta = validate_metadata(metadata)
        self.ensure_bucket(bucket)
        written = self._write_temp(data)
        sidecar = self._write_temp(
            json.dumps(
                {
                    "etag": written.etag,
                    "size": written.size,
                    "content_type": content_type,
                    "metadata": sidecar_meta,
                    "identity": list(written.identity),
                }
            ).encode()
        )
        try:
            with self._key_lock(bucket, key, exclusive=True), _os_errors(f"write {bucket}/{key}", key):
                # Sidecar first: if we die between the renames, the old bytes stay visible
                # and the identity check makes `head` ignore the new sidecar.
                _install(sidecar.path, self._meta_path(bucket, key))
                _install(written.path, path)
        finally:
            for temp in (written.path, sidecar.path):
                temp.unlink(missing_ok=True)
        return ObjectRef(bucket=bucket, key=key, etag=written.etag, size=written.size, content_type=content_type)

    def get(self, ref: ObjectRef, *, max_bytes: int) -> bytes:
        """Read the object in chunks, refusing anything over `max_bytes`.

        Raises `ObjectNotFound` (also for a ref naming a version: this store keeps none),
        `LimitExceeded` (reason ``too_large``), `InvalidKey`, `StorageUnavailable`.
        """
        path = self._data_path(ref.bucket, ref.key)
        _refuse_version(ref)
        with self._open(path, ref) as (handle, info):
            if info.st_size > max_bytes:
                raise _too_large(ref, info.st_size, max_bytes)
            chunks: list[bytes] = []
            received = 0
            while chunk := handle.read(min(CHUNK_BYTES, max_bytes + 1 - received)):
                received += len(chunk)
                if received > max_bytes:
                    raise _too_large(ref, received, max_bytes)
                chunks.append(chunk)
            return b"".join(chunks)

    def stat(self, ref: ObjectRef) -> ObjectRef:
        """The ref completed with size, etag and content type (see `head`)."""
        return self.head(ref).ref

    def head(self, ref: ObjectRef) -> ObjectInfo:
        """Size, etag, content type and metadata of the current bytes.

        Raises `ObjectNotFound`, `InvalidKey`, `StorageUnavailable`.
        """
        path = self._data_path(ref.bucket, ref.key)
        meta_path = self._meta_path(ref.bucket, ref.key)
        _refuse_version(ref)
        with self._key_lock(ref.bucket, ref.key, exclusive=False), self._open(path, ref) as (handle, info):
            sidecar = _read_sidecar(meta_path)
            if sidecar is not None and tuple(sidecar["identity"]) == _identity(info):
                etag, content_type, metadata = sidecar["etag"], sidecar["content_type"], sidecar["metadata"]
            else:
                etag, content_type, metadata = _md5_of(handle), DEFAULT_CONTENT_TYPE, {}
            completed = ref.model_copy(
                update={"etag": etag, "size": info.st_size, "content_type": content_type, "version_id": None}
            )
        return ObjectInfo(ref=completed, metadata=dict(metadata))

    def delete(self, ref: ObjectRef) -> None:
        """Remove the object and its sidecar, then prune directories left empty. Missing
        objects (and refs naming a version, which this store never has) are fine."""
        path = self._data_path(ref.bucket, ref.key)
        meta_path = self._meta_path(ref.bucket, ref.key)
        if ref.version_id is not None:
            return
        with self._key_lock(ref.bucket, ref.key, exclusive=True), _os_errors(f"delete {ref.bucket}/{ref.key}"):
            for target, top in ((path, self._root / ref.bucket), (meta_path, self._root / META_DIR / ref.bucket)):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    target.unlink()
                _prune_empty_parents(target.parent, top)

    def list_refs(self, bucket: str, prefix: str, *, start_after: str = "") -> Iterator[ObjectRef]:
        """Every key under `prefix` after `start_after`, in key order (this store keeps no
        versions). Walks the bucket's tree; a missing bucket holds nothing."""
        top = self._root / validate_bucket(bucket)
        with _os_errors(f"list {bucket}/{prefix}"):
            keys = sorted(
                key
                for path in top.rglob("*")
                if path.is_file() and (key := path.relative_to(top).as_posix()).startswith(prefix) and key > start_after
            )
        for key in keys:
            yield ObjectRef(bucket=bucket, key=key)

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    # -- paths ----------------------------------------------------------------------------

    def _data_path(self, bucket: str, key: str) -> Path:
        return _inside(self._root / validate_bucket(bucket), validate_key(key))

    def _meta_path(self, bucket: str, key: str) -> Path:
        return _inside(self._root / META_DIR / validate_bucket(bucket), validate_key(key))

    # -- helpers --------------------------------------------------------------------------

    def _write_temp(self, data: bytes | BinaryIO) -> _Written:
        """Write `data` to a new file under the temp dir, fsync it and hash it."""
        temp_dir = self._root / TMP_DIR
        path = temp_dir / f"{uuid.uuid4().hex}.part"
        digest = hashlib.md5(usedforsecurity=False)  # S3's single-part etag, not security
        size = 0
        with _os_errors("write a temp file"):
            temp_dir.mkdir(parents=True, exist_ok=True)
            # os.open with 0o666 so the process umask decides the final permissions.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                with os.fdopen(fd, "wb") as handle:
                    for chunk in _chunks(data):
                        digest.update(chunk)
                        handle.write(chunk)
                        size += len(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
                    info = os.fstat(handle.fileno())
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return _Written(path=path, etag=digest.hexdigest(), size=size, identity=_identity(info))

    @contextlib.contextmanager
    def _key_lock(self, bucket: str, key: str, *, exclusive: bool) -> Iterator[None]:
        """Hold one of `LOCK_STRIPES` file locks chosen by (bucket, key), across processes.

        Writers of a key take it exclusively so the sidecar and the data they install belong
        together; `head` takes it shared so it never sees one writer's data with another's
        sidecar.
        """
        stripe = zlib.crc32(f"{bucket}/{key}".encode()) % LOCK_STRIPES
        lock_dir = self._root / LOCK_DIR
        with contextlib.ExitStack() as held:
            with _os_errors("take a key lock"):
                lock_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(blocking_lock(lock_dir / f"{stripe:02d}.lock", shared=not exclusive))
            yield

    @contextlib.contextmanager
    def _open(self, path: Path, ref: ObjectRef) -> Iterator[tuple[BinaryIO, os.stat_result]]:
        """Open the object's file for reading, or raise `ObjectNotFound`."""
        try:
            # O_NOFOLLOW: the path was resolved already; a symlink here means it was swapped.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise _missing(ref) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidKey(f"object key {ref.key!r} leads through a symlink") from exc
            raise StorageUnavailable(f"cannot read {ref.bucket}/{ref.key}: {exc.strerror}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a directory: a prefix of other keys, not an object
            os.close(fd)
            raise _missing(ref)
        with os.fdopen(fd, "rb") as handle, _os_errors(f"read {ref.bucket}/{ref.key}"):
            yield handle, info


def _inside(bucket_dir: Path, key: str) -> Path:
    """The resolved path of `key` under `bucket_dir`; `InvalidKey` if it is not inside.

    `validate_key` already rules out ``..`` and absolute keys; this also catches symlinks
    (planted in the tree) that point elsewhere.
    """
    path = bucket_dir.joinpath(*key.split("/")).resolve()
    if path == bucket_dir or not path.is_relative_to(bucket_dir):
        raise InvalidKey(f"object key {key!r} resolves outside its bucket")
    return path


def _install(temp: Path, target: Path) -> None:
    """Atomically rename `temp` onto `target`, creating parents, and fsync the directory."""
    for attempt in range(_INSTALL_ATTEMPTS):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            break
        except FileNotFoundError:
            if attempt == _INSTALL_ATTEMPTS - 1:
                raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune_empty_parents(directory: Path, top: Path) -> None:
    """rmdir `directory` and its parents up to (not including) `top` while they are empty."""
    while directory != top and directory.is_relative_to(top):
        try:
            directory.rmdir()
        except OSError:  # not empty (another key lives there), or already gone
            return
        directory = directory.parent


_SIDECAR_FIELDS = {"etag": str, "size": int, "content_type": str, "metadata": dict, "identity": list}


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's fields, or None when it is missing or not one we wrote."""
    try:
        loaded = json.loads(path.read_bytes())
    except (OSError, ValueError):  # missing or unreadable: fall back to the bytes themselves
        return None
    if not isinstance(loaded, dict):
        return None
    if not all(isinstance(loaded.get(name), kind) for name, kind in _SIDECAR_FIELDS.items()):
        return None
    return loaded


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _md5_of(handle: BinaryIO) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    handle.seek(0)
    while chunk := handle.read(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def _chunks(data: bytes | BinaryIO) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray):
        yield bytes(data)
        return
    while chunk := data.read(CHUNK_BYTES):
        yield chunk


def _refuse_version(ref: ObjectRef) -> None:
    if ref.version_id is not None:
        raise ObjectNotFound(
            f"object {ref.bucket}/{ref.key} version {ref.version_id!r} does not exist "
            "(the local store keeps no versions)"
        )


def _missing(ref: ObjectRef) -> ObjectNotFound:
    return ObjectNotFound(f"object {ref.bucket}/{ref.key} does not exist")


def _too_large(ref: ObjectRef, size: int, max_bytes: int) -> LimitExceeded:
    return LimitExceeded(
        f"object {ref.bucket}/{ref.key} is larger than the {max_bytes}-byte limit ({size} bytes or more)",
        reason="too_large",
    )


@contextlib.contextmanager
def _os_errors(action: str, key: str | None = None) -> Iterator[None]:
    """Translate `OSError`: a file/directory clash between keys is `InvalidKey`, anything
    else (disk full, permissions, I/O error) `StorageUnavailable`."""
    try:
        yield
    except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
        if key is None:
            raise StorageUnavailable(f"cannot {action}: {exc.strerror}") from exc
        raise InvalidKey(
            f"object key {key!r} clashes with another key in the local store "
            "(one key cannot be both an object and a prefix of other keys, like 'a' and 'a/b')"
        ) from exc
    except OSError as exc:
        raise StorageUnavailable(f"cannot {action}: {exc.strerror or exc}") from exc
