"""Find, download, verify, fingerprint and load ImageBind checkpoints.

`resolve_checkpoint` finds, downloads or creates the file the settings name and fingerprints
it; everything but creating the tiny random checkpoint (which needs torch) is in
`shared.imagebind.resolve`, torch-free, with the resolution order and the fingerprint cache.

`load_model` reads the file memory-mapped (``torch.load(mmap=True, weights_only=True)``),
keeps only the requested modalities' keys, checks them strictly against the architecture and
assigns them into a model built on the meta device: no second copy of the weights is made on
the way (on CPU in fp32 the parameters stay backed by the file's pages).

Nothing here touches the network at import time; a download fails within
``download_timeout_s`` when offline, with a `CheckpointError` saying how to use a local copy.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch

from shared.config import ModelSettings
from shared.errors import CheckpointError
from shared.imagebind.config import (
    CHECKPOINT_MODALITIES,
    CHECKPOINT_PARTS,
    ImageBindConfig,
    ModelModality,
    config_by_name,
)
from shared.imagebind.fingerprint import atomic_write_bytes
from shared.imagebind.model import ImageBindModel, build_model, place, random_state_dict
from shared.imagebind.resolve import (
    TINY_RANDOM_SEED,
    ResolvedCheckpoint,
    is_tiny_random,
    locate_checkpoint,
    tiny_random_path,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# resolution (the torch-free part is `shared.imagebind.resolve`)


def tiny_random_checkpoint(cache_dir: Path, seed: int = TINY_RANDOM_SEED) -> Path:
    """The seeded random tiny checkpoint in `cache_dir/checkpoints`, created on first use.

    Serialised in memory first (so the bytes, hence the fingerprint, do not depend on a
    temporary file name), then written atomically: processes racing here all end with the
    same complete file.
    """
    dest = tiny_random_path(cache_dir, seed)
    if not dest.exists():
        buffer = io.BytesIO()
        torch.save(random_state_dict(config_by_name("tiny"), seed=seed), buffer)
        atomic_write_bytes(dest, buffer.getvalue())
        log.warning("created %s: a RANDOM tiny ImageBind for offline smoke runs, not a trained model", dest)
    return dest


def resolve_checkpoint(settings: ModelSettings) -> ResolvedCheckpoint:
    """Find (or fetch, or create) the checkpoint the settings describe and fingerprint it:
    `shared.imagebind.resolve.locate_checkpoint`, creating the tiny random checkpoint first
    when that is the one asked for (which needs torch).

    Raises `CheckpointError` for a missing local file, a failed download, or a hash mismatch.
    """
    if is_tiny_random(settings):
        tiny_random_checkpoint(settings.cache_dir)
    return locate_checkpoint(settings)


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
