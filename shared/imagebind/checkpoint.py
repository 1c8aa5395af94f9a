"""Find, download, verify, fingerprint and load ImageBind checkpoints.

Resolution order (`resolve_checkpoint`):
1. ``ModelSettings.checkpoint`` (``OMNIBIND_MODEL__CHECKPOINT``): a local file, used as is
   (checked against ``sha256`` when one is configured);
2. ``name == "tiny"``: a seeded random tiny checkpoint, created once in the cache dir and
   labelled ``imagebind-tiny-random`` (it is NOT a trained model);
3. otherwise the official file, downloaded once from ``url`` into ``cache_dir/checkpoints``
   with a progress bar, resuming a partial ``.part`` file, checked against the configured
   ``sha256`` or, when none is configured, pinned at first download in a ``.sha256`` file
   beside it and verified against that pin afterwards (Meta publishes no checksum).

Every resolved file gets a fingerprint, its SHA-256, cached in ``cache_dir/hashes`` keyed by
path, size and mtime so a 4.8 GB file is hashed once, not at every start.

`load_model` reads the file memory-mapped (``torch.load(mmap=True, weights_only=True)``),
keeps only the requested modalities' keys, checks them strictly against the architecture and
assigns them into a model built on the meta device: no second copy of the weights is made on
the way (on CPU in fp32 the parameters stay backed by the file's pages).

Nothing here touches the network at import time; a download fails within
``download_timeout_s`` when offline, with a `CheckpointError` saying how to use a local copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path

import torch
from tqdm import tqdm

from shared.config import ModelSettings
from shared.errors import CheckpointError
from shared.imagebind.config import (
    CHECKPOINT_MODALITIES,
    CHECKPOINT_PARTS,
    ImageBindConfig,
    ModelModality,
    config_by_name,
)
from shared.imagebind.model import ImageBindModel, build_model, place, random_state_dict

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
MAX_RESUMES = 5  # reconnects per download after a connection dropped mid-file
TINY_RANDOM_NAME = "imagebind-tiny-random"
TINY_RANDOM_SEED = 0
LOCAL_COPY_HINT = (
    "To use a local copy, set OMNIBIND_MODEL__CHECKPOINT=/path/to/imagebind_huge.pth (or copy the file to {dest})."
)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint file ready to load: where it is, what it is, and its fingerprint."""

    path: Path
    sha256: str
    model_name: str
    config: ImageBindConfig


# ---------------------------------------------------------------------------------------------
# hashing


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_cache_path(path: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_dir / "hashes" / f"{key}.json"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
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
    sha = _sha256_of(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        _atomic_write_bytes(sidecar, json.dumps({**stamp, "sha256": sha}).encode())
    return sha


def _remember_sha256(path: Path, cache_dir: Path, sha: str) -> None:
    """Record a hash computed while downloading, so the first load does not read the file again."""
    stat = path.stat()
    stamp = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    with contextlib.suppress(OSError):
        _atomic_write_bytes(_hash_cache_path(path, cache_dir), json.dumps(stamp).encode())


def _pin_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _read_pin(dest: Path) -> str | None:
    """The pinned hash, in ``sha256sum`` format (``<hex>  <name>``), or None."""
    try:
        text = _pin_path(dest).read_text().split()
    except FileNotFoundError:
        return None
    return text[0].lower() if text else None


def _write_pin(dest: Path, sha: str) -> None:
    _atomic_write_bytes(_pin_path(dest), f"{sha}  {dest.name}\n".encode())


# ---------------------------------------------------------------------------------------------
# download


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path`: processes starting together download only once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


# ---------------------------------------------------------------------------------------------
# resolution


def _verified(path: Path, cache_dir: Path, expected: str | None, what: str) -> str:
    try:
        sha = file_sha256(path, cache_dir)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if expected is not None and sha != expected.lower():
        raise CheckpointError(
            f"checkpoint {path} has sha256 {sha} but {what} is {expected.lower()}; "
            "the file is corrupt or not the one expected (delete it to download it again).",
            reason="checkpoint_mismatch",
        )
    return sha


def _download_cached(settings: ModelSettings) -> Path:
    """The official file in the cache dir, downloaded (once, under a lock) if missing."""
    dest = settings.cache_dir / "checkpoints" / (Path(settings.url).name or "imagebind_huge.pth")
    with _exclusive(dest.with_name(dest.name + ".lock")):
        if not dest.exists():
            log.info("downloading the ImageBind checkpoint %s to %s", settings.url, dest)
            sha = download(settings.url, dest, expected_sha256=settings.sha256, timeout_s=settings.download_timeout_s)
            _remember_sha256(dest, settings.cache_dir, sha)
            if settings.sha256 is None:
                _write_pin(dest, sha)
                log.info("pinned sha256 %s for %s", sha, dest)
        elif settings.sha256 is None and _read_pin(dest) is None:
            # A file someone put into the cache by hand: pin what is there now.
            _write_pin(dest, _verified(dest, settings.cache_dir, None, "unpinned"))
    return dest


def tiny_random_checkpoint(cache_dir: Path, seed: int = TINY_RANDOM_SEED) -> Path:
    """The seeded random tiny checkpoint in `cache_dir/checkpoints`, created on first use.

    Serialised in memory first (so the bytes, hence the fingerprint, do not depend on a
    temporary file name), then written atomically: processes racing here all end with the
    same complete file.
    """
    dest = cache_dir / "checkpoints" / f"{TINY_RANDOM_NAME}-seed{seed}.pt"
    if not dest.exists():
        buffer = io.BytesIO()
        torch.save(random_state_dict(config_by_name("tiny"), seed=seed), buffer)
        _atomic_write_bytes(dest, buffer.getvalue())
        log.warning("created %s: a RANDOM tiny ImageBind for offline smoke runs, not a trained model", dest)
    return dest


def resolve_checkpoint(settings: ModelSettings) -> ResolvedCheckpoint:
    """Find (or fetch, or create) the checkpoint the settings describe and fingerprint it.

    Raises `CheckpointError` for a missing local file, a failed download, or a hash mismatch.
    """
    config = config_by_name(settings.name)
    if settings.checkpoint is not None:
        path = settings.checkpoint.expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"OMNIBIND_MODEL__CHECKPOINT points to {path}, which is not a file.", reason="checkpoint_missing"
            )
        sha = _verified(path, settings.cache_dir, settings.sha256, "OMNIBIND_MODEL__SHA256")
        return ResolvedCheckpoint(path, sha, config.name, config)
    if settings.name == "tiny":
        path = tiny_random_checkpoint(settings.cache_dir)
        sha = _verified(path, settings.cache_dir, settings.sha256, "OMNIBIND_MODEL__SHA256")
        return ResolvedCheckpoint(path, sha, TINY_RANDOM_NAME, config)
    path = _download_cached(settings)
    expected, what = (settings.sha256, "OMNIBIND_MODEL__SHA256") if settings.sha256 else (_read_pin(path), "its pin")
    sha = _verified(path, settings.cache_dir, expected, what)
    return ResolvedCheckpoint(path, sha, config.name, config)


# ---------------------------------------------------------------------------------------------
# loading


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Memory-map a plain state_dict file (tensors only: ``weights_only=True``).

    Raises `CheckpointError` if the file is missing, corrupt or holds anything but tensors.
    """
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Files in torch's pre-1.6 format cannot be memory-mapped; read them whole.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist", reason="checkpoint_missing") from exc
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated, corrupt, or not a plain state_dict of tensors): {exc}",
            reason="checkpoint_corrupt",
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        top = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a plain state_dict of tensors (top level: {top})",
            reason="checkpoint_corrupt",
        )
    return state


def select_modalities(
    state: dict[str, torch.Tensor], modalities: Iterable[ModelModality]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Split a full ImageBind state_dict into the requested modalities' entries and the keys
    that fit no ImageBind modality at all (returned as unexpected); keys of other ImageBind
    modalities (depth, thermal, imu, or ones not requested) are dropped."""
    wanted = set(modalities)
    selected: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        part, _, rest = key.partition(".")
        modality = rest.partition(".")[0]
        if part not in CHECKPOINT_PARTS or modality not in CHECKPOINT_MODALITIES:
            unknown.append(key)
        elif modality in wanted:
            selected[key] = value
    return selected, unknown


def _listed(label: str, items: list[str], limit: int = 8) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {label}: " + ", ".join(items[:limit]) + more


def check_compatible(model: ImageBindModel, state: dict[str, torch.Tensor], unknown: list[str], path: Path) -> None:
    """Raise `CheckpointError` naming every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected] + unknown
    mismatched = [
        f"{k} (file {list(v.shape)}, model {list(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    not_float = [k for k, v in state.items() if not v.is_floating_point()]
    problems = [
        _listed(label, items)
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
            ("non-floating tensors", not_float),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit {model.config.name} ({', '.join(model.modalities)}): "
            + "; ".join(problems)
            + ". Is OMNIBIND_MODEL__NAME right for this file?",
            reason="checkpoint_incompatible",
        )


def load_model(
    path: Path,
    config: ImageBindConfig,
    modalities: Iterable[ModelModality],
    *,
    device: torch.device | str = "cpu",
    matmul_dtype: torch.dtype = torch.float32,
) -> ImageBindModel:
    """Build only `modalities` of `config` and load their weights from `path`, strictly.

    The model is built on the meta device and the memory-mapped tensors are assigned into it,
    then moved to `device` with matmul weights in `matmul_dtype` (see `model.place`).
    Raises `CheckpointError` if the file cannot be read or does not fit the architecture.
    """
    model = build_model(config, modalities, device="meta")
    selected, unknown = select_modalities(read_state_dict(path), model.modalities)
    check_compatible(model, selected, unknown, path)
    model.load_state_dict(selected, strict=True, assign=True)
    return place(model, torch.device(device), matmul_dtype)
