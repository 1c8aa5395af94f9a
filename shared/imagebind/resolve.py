"""Find, download, verify and fingerprint ImageBind checkpoint files — without torch.

`locate_checkpoint` is the resolution half of `shared.imagebind.checkpoint.resolve_checkpoint`
that needs no model code, so a process that only fetches the file (`omnibind demo` checks
for it before any worker starts) does not import torch. Resolution order:

1. ``ModelSettings.checkpoint`` (``OMNIBIND_MODEL__CHECKPOINT``): a local file, used as is
   (checked against ``sha256`` when one is configured);
2. ``name == "tiny"``: the seeded random tiny checkpoint in the cache dir, labelled
   ``imagebind-tiny-random`` (it is NOT a trained model); creating it needs torch, so
   `shared.imagebind.checkpoint.tiny_random_checkpoint` does that, and here a missing one is
   a `CheckpointError`;
3. otherwise the official file, downloaded once from ``url`` into ``cache_dir/checkpoints``
   with a progress bar, resuming a partial ``.part`` file, checked against the configured
   ``sha256`` or, when none is configured, pinned at first download in a ``.sha256`` file
   beside it and verified against that pin afterwards (Meta publishes no checksum).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shared.config import ModelSettings
from shared.errors import CheckpointError
from shared.imagebind.config import ImageBindConfig, config_by_name
from shared.imagebind.download import download, exclusive
from shared.imagebind.fingerprint import file_sha256, read_pin, remember_sha256, write_pin

log = logging.getLogger(__name__)

TINY_RANDOM_NAME = "imagebind-tiny-random"
TINY_RANDOM_SEED = 0


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint file ready to load: where it is, what it is, and its fingerprint."""

    path: Path
    sha256: str
    model_name: str
    config: ImageBindConfig


def is_tiny_random(settings: ModelSettings) -> bool:
    """Whether `settings` ask for the seeded random tiny checkpoint (no file configured)."""
    return settings.checkpoint is None and settings.name == "tiny"


def tiny_random_path(cache_dir: Path, seed: int = TINY_RANDOM_SEED) -> Path:
    """Where the seeded random tiny checkpoint lives in `cache_dir`."""
    return cache_dir / "checkpoints" / f"{TINY_RANDOM_NAME}-seed{seed}.pt"


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
    with exclusive(dest.with_name(dest.name + ".lock")):
        if not dest.exists():
            log.info("downloading the ImageBind checkpoint %s to %s", settings.url, dest)
            sha = download(settings.url, dest, expected_sha256=settings.sha256, timeout_s=settings.download_timeout_s)
            remember_sha256(dest, settings.cache_dir, sha)
            if settings.sha256 is None:
                write_pin(dest, sha)
                log.info("pinned sha256 %s for %s", sha, dest)
        elif settings.sha256 is None and read_pin(dest) is None:
            # A file someone put into the cache by hand: pin what is there now.
            write_pin(dest, _verified(dest, settings.cache_dir, None, "unpinned"))
    return dest


def locate_checkpoint(settings: ModelSettings) -> ResolvedCheckpoint:
    """Find (or fetch) the checkpoint the settings describe and fingerprint it.

    Raises `CheckpointError` for a missing local file (the tiny random one included: see the
    module docstring), a failed download, or a hash mismatch.
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
    if is_tiny_random(settings):
        path = tiny_random_path(settings.cache_dir)
        if not path.is_file():
            raise CheckpointError(
                f"the tiny random checkpoint {path} has not been created yet "
                "(shared.imagebind.checkpoint.tiny_random_checkpoint creates it)",
                reason="checkpoint_missing",
            )
        sha = _verified(path, settings.cache_dir, settings.sha256, "OMNIBIND_MODEL__SHA256")
        return ResolvedCheckpoint(path, sha, TINY_RANDOM_NAME, config)
    path = _download_cached(settings)
    expected, what = (settings.sha256, "OMNIBIND_MODEL__SHA256") if settings.sha256 else (read_pin(path), "its pin")
    sha = _verified(path, settings.cache_dir, expected, what)
    return ResolvedCheckpoint(path, sha, config.name, config)
