"""Checkpoint fingerprints: SHA-256 of a file, cached by (path, size, mtime) so a 4.8 GB
checkpoint is hashed once, and the ``sha256sum``-style pin written at first download."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_cache_path(path: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_dir / "hashes" / f"{key}.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers (and racing
    writers in other processes) only ever see a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide the cache from other users
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: Path, cache_dir: Path) -> str:
    """SHA-256 (hex) of `path`, remembered in a sidecar under `cache_dir/hashes` keyed by the
    file's resolved path, size and mtime; a changed file is hashed again. Raises OSError."""
    stat = path.stat()
    sidecar = _hash_cache_path(path, cache_dir)
    stamp = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(sidecar.read_text())
        if {k: cached.get(k) for k in stamp} == stamp and isinstance(cached.get("sha256"), str):
            return str(cached["sha256"])
    log.info("hashing %s (%.1f MB); the result is cached", path, stat.st_size / 1e6)
    sha = sha256_of(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        atomic_write_bytes(sidecar, json.dumps({**stamp, "sha256": sha}).encode())
    return sha


def remember_sha256(path: Path, cache_dir: Path, sha: str) -> None:
    """Record a hash computed while downloading, so the first load does not read the file again."""
    stat = path.stat()
    stamp = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    with contextlib.suppress(OSError):
        atomic_write_bytes(_hash_cache_path(path, cache_dir), json.dumps(stamp).encode())


def _pin_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def read_pin(dest: Path) -> str | None:
    """The pinned hash, in ``sha256sum`` format (``<hex>  <name>``), or None."""
    try:
        text = _pin_path(dest).read_text().split()
    except FileNotFoundError:
        return None
    return text[0].lower() if text else None


def write_pin(dest: Path, sha: str) -> None:
    atomic_write_bytes(_pin_path(dest), f"{sha}  {dest.name}\n".encode())
