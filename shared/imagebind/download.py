"""Downloading the checkpoint: one HTTP stream into a ``.part`` file, resumed with Range
requests after a dropped connection, size- and hash-checked before it is renamed into place,
under a file lock so processes starting together download once. Standard library only."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPException, HTTPResponse
from pathlib import Path

from tqdm import tqdm

from shared.errors import CheckpointError
from shared.file_locks import blocking_lock
from shared.imagebind.fingerprint import CHUNK_BYTES

log = logging.getLogger(__name__)

MAX_RESUMES = 5  # reconnects per download after a connection dropped mid-file
LOCAL_COPY_HINT = (
    "To use a local copy, set OMNIBIND_MODEL__CHECKPOINT=/path/to/imagebind_huge.pth (or copy the file to {dest})."
)


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path`: processes starting together download only once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with blocking_lock(lock_path):
        yield


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _open(url: str, offset: int, timeout_s: float) -> HTTPResponse:
    headers = {"User-Agent": "omnibind", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response: HTTPResponse = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    return response


def _response_span(response: HTTPResponse, offset: int) -> tuple[int, int | None]:
    """(first byte the body starts at, total size or None) for a 200 or 206 response."""
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.match(content_range)
        if not match or int(match.group(1)) != offset:
            raise CheckpointError(
                f"server answered a resume from byte {offset} with Content-Range {content_range!r}",
                reason="checkpoint_download",
            )
        total = match.group(3)
        return offset, None if total == "*" else int(total)
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None else None


def _stream_into(response: HTTPResponse, part: Path, start: int, total: int | None, hasher: hashlib._Hash) -> None:
    mode = "ab" if start else "wb"
    with (
        part.open(mode) as fh,
        tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name, disable=None
        ) as bar,
    ):
        while chunk := response.read(CHUNK_BYTES):
            fh.write(chunk)
            hasher.update(chunk)
            bar.update(len(chunk))
        fh.flush()
        os.fsync(fh.fileno())


def _hash_prefix(part: Path, length: int) -> hashlib._Hash:
    hasher = hashlib.sha256()
    with part.open("rb") as fh:
        remaining = length
        while remaining and (chunk := fh.read(min(CHUNK_BYTES, remaining))):
            hasher.update(chunk)
            remaining -= len(chunk)
    return hasher


def _fetch_once(url: str, part: Path, timeout_s: float) -> tuple[hashlib._Hash, int | None]:
    """One HTTP request that appends to `part` from its current size.

    Returns the hash of all bytes in `part` and the file's total size if the server said it.
    Raises OSError/HTTPException when the connection fails or drops (the .part stays).
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # 416: nothing left after `offset`; the .part may already be complete.
        match = re.search(r"/(\d+)", exc.headers.get("Content-Range", ""))
        total = int(match.group(1)) if match else None
        if total != offset:
            part.unlink()
            return _fetch_once(url, part, timeout_s)
        return _hash_prefix(part, offset), total
    with response:
        start, total = _response_span(response, offset)
        if offset and start == 0:
            log.info("server ignored the resume request; downloading %s from the start", url)
        hasher = _hash_prefix(part, start) if start else hashlib.sha256()
        _stream_into(response, part, start, total, hasher)
    received = part.stat().st_size
    if total is not None and received < total:
        # http.client returns a short body silently when the peer closes early.
        raise ConnectionError(f"connection closed after {received} of {total} bytes")
    return hasher, total


def download(url: str, dest: Path, *, expected_sha256: str | None, timeout_s: float) -> str:
    """Download `url` to `dest` (resuming ``dest.part``), verify size and hash, rename into place.

    Returns the file's SHA-256. Raises `CheckpointError` when the server cannot be reached
    (quickly: connect and read time out after `timeout_s`), when the size is short after
    `MAX_RESUMES` reconnects (the .part is kept for the next try), or when the hash differs
    from `expected_sha256` (the .part is deleted so no bad file is ever cached).
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(MAX_RESUMES + 1):
        before = part.stat().st_size if part.exists() else 0
        try:
            hasher, total = _fetch_once(url, part, timeout_s)
            break
        except (OSError, HTTPException) as exc:
            progressed = part.exists() and part.stat().st_size > before
            if isinstance(exc, urllib.error.HTTPError) or not progressed or attempt == MAX_RESUMES:
                hint = LOCAL_COPY_HINT.format(dest=dest)
                raise CheckpointError(
                    f"cannot download the ImageBind checkpoint from {url}: {exc}. {hint}",
                    reason="checkpoint_download",
                ) from exc
            log.warning("download of %s interrupted (%s); resuming", url, exc)
    size = part.stat().st_size
    if total is not None and size != total:
        raise CheckpointError(
            f"download of {url} ended at {size} of {total} bytes; run again to resume.",
            reason="checkpoint_download",
        )
    sha = hasher.hexdigest()
    if expected_sha256 is not None and sha != expected_sha256.lower():
        part.unlink()
        raise CheckpointError(
            f"downloaded {url} has sha256 {sha}, expected {expected_sha256.lower()}; the file was discarded.",
            reason="checkpoint_mismatch",
        )
    os.replace(part, dest)
    return sha
