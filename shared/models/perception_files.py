"""Finding, downloading and fingerprinting PE-AV model directories — without torch.

A PE-AV model is a directory in the `transformers` layout: ``config.json``,
``model.safetensors`` (or shards with an index) and ``tokenizer.json``. Resolution order
(the same as ImageBind's, `shared.imagebind.resolve`):

1. ``OMNIBIND_MODEL__CHECKPOINT``: a local directory, used as is (its weights checked
   against ``OMNIBIND_MODEL__SHA256`` when set);
2. ``pe-av-tiny``: the seeded random tiny model in the cache dir, labelled
   ``pe-av-tiny-random``; creating its weights needs torch (`shared.models.perception`
   does it), its tokenizer does not (`tiny_tokenizer`, so a cpu worker can make it);
3. otherwise the hub repository of the catalogue, downloaded once into ``cache_dir/hub``
   (``huggingface_hub.snapshot_download``, the hub's cache layout, at
   ``OMNIBIND_MODEL__REVISION`` or main), and the SHA-256 of its weights checked against
   ``OMNIBIND_MODEL__SHA256`` or, when none is set, pinned at first download in
   ``cache_dir/checkpoints/<label>.sha256`` and verified against that pin afterwards.

The fingerprint stored on every record is the SHA-256 of ``model.safetensors`` (of the
shard list with each shard's hash, for sharded weights).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from shared.config import ModelSettings
from shared.errors import CheckpointError
from shared.imagebind.download import exclusive
from shared.imagebind.fingerprint import atomic_write_bytes, file_sha256, read_pin, write_pin
from shared.models.catalog import ModelCard, card_for

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
CONFIG = "config.json"
TINY_SEED = 0
HUB_PATTERNS = [CONFIG, WEIGHTS, "model.safetensors.index.json", "model-*.safetensors", TOKENIZER, "*.json"]
LOCAL_DIR_HINT = (
    "To use a local copy, set OMNIBIND_MODEL__CHECKPOINT=/path/to/{repo} (a directory with config.json, "
    "model.safetensors and tokenizer.json, e.g. from `huggingface-cli download {repo}`)."
)


@dataclass(frozen=True)
class ResolvedModelDir:
    """A PE-AV directory ready to load: where, what (the record label) and its fingerprint."""

    path: Path
    sha256: str
    model_name: str
    card: ModelCard


def tiny_dir(cache_dir: Path, seed: int = TINY_SEED) -> Path:
    return cache_dir / "checkpoints" / f"pe-av-tiny-random-seed{seed}"


def weight_files(directory: Path) -> list[Path]:
    """The safetensors weights of a model directory (one file or the shards), or []."""
    single = directory / WEIGHTS
    if single.is_file():
        return [single]
    return sorted(directory.glob("model-*-of-*.safetensors"))


def weights_sha256(directory: Path, cache_dir: Path) -> str:
    """SHA-256 of the weights (cached per file by path, size and mtime). Raises CheckpointError."""
    files = weight_files(directory)
    if not files:
        raise CheckpointError(
            f"{directory} holds no model.safetensors (nor shards): not a PE-AV model directory",
            reason="checkpoint_missing",
        )
    try:
        hashes = [(f.name, file_sha256(f, cache_dir)) for f in files]
    except OSError as exc:
        raise CheckpointError(f"cannot read the weights in {directory}: {exc}", reason="checkpoint_corrupt") from exc
    if len(hashes) == 1:
        return hashes[0][1]
    return hashlib.sha256("".join(f"{sha}  {name}\n" for name, sha in hashes).encode()).hexdigest()


def _verified(directory: Path, cache_dir: Path, expected: str | None, what: str) -> str:
    sha = weights_sha256(directory, cache_dir)
    if expected is not None and sha != expected.lower():
        raise CheckpointError(
            f"the weights in {directory} have sha256 {sha} but {what} is {expected.lower()}; "
            "they are corrupt or not the ones expected (delete them to download again).",
            reason="checkpoint_mismatch",
        )
    return sha


def _check_layout(directory: Path) -> None:
    missing = [name for name in (CONFIG, TOKENIZER) if not (directory / name).is_file()]
    if missing or not weight_files(directory):
        raise CheckpointError(
            f"{directory} is not a PE-AV model directory (missing: {', '.join(missing) or WEIGHTS})",
            reason="checkpoint_missing",
        )


def _download(settings: ModelSettings, card: ModelCard, patterns: list[str]) -> Path:
    """`snapshot_download` of `card.repo` (only `patterns`) into the hub cache; CheckpointError if offline."""
    assert card.repo is not None
    from huggingface_hub import snapshot_download  # torch-free; deferred: only downloads need it

    lock = settings.cache_dir / "checkpoints" / f"{card.label}.lock"
    with exclusive(lock):
        try:
            path = snapshot_download(
                card.repo,
                revision=settings.revision,
                cache_dir=settings.cache_dir / "hub",
                allow_patterns=patterns,
                etag_timeout=settings.download_timeout_s,
            )
        except Exception as exc:  # the hub client raises many kinds (HTTP, offline, auth)
            hint = LOCAL_DIR_HINT.format(repo=card.repo)
            raise CheckpointError(
                f"cannot download {card.repo} (revision {settings.revision or 'main'}): {exc}. {hint}",
                reason="checkpoint_download",
            ) from exc
    return Path(str(path))


def locate_model_dir(settings: ModelSettings) -> ResolvedModelDir:
    """Find (or fetch) the PE-AV directory the settings describe and fingerprint it.

    Raises `CheckpointError` for a missing or incomplete directory (the tiny one included
    before `shared.models.perception` created it), a failed download, or a hash mismatch.
    """
    card = card_for(settings.name)
    if settings.checkpoint is not None:
        path = settings.checkpoint.expanduser()
        if not path.is_dir():
            raise CheckpointError(
                f"OMNIBIND_MODEL__CHECKPOINT points to {path}, which is not a directory "
                f"({card.name} is loaded from a transformers model directory).",
                reason="checkpoint_missing",
            )
        _check_layout(path)
        sha = _verified(path, settings.cache_dir, settings.sha256, "OMNIBIND_MODEL__SHA256")
        return ResolvedModelDir(path, sha, card.label.removesuffix("-random"), card)
    if card.random:
        path = tiny_dir(settings.cache_dir)
        _check_layout(path)
        return ResolvedModelDir(path, _verified(path, settings.cache_dir, settings.sha256, "set"), card.label, card)
    path = _download(settings, card, HUB_PATTERNS)
    _check_layout(path)
    pin_at = settings.cache_dir / "checkpoints" / card.label
    if settings.sha256 is not None:
        return ResolvedModelDir(path, _verified(path, settings.cache_dir, settings.sha256, "set"), card.label, card)
    pinned = read_pin(pin_at)
    sha = _verified(path, settings.cache_dir, pinned, "its pin")
    if pinned is None:
        write_pin(pin_at, sha)
        log.info("pinned sha256 %s for %s", sha, card.repo)
    return ResolvedModelDir(path, sha, card.label, card)


def tiny_tokenizer(directory: Path) -> Path:
    """A byte-level tokenizer for the tiny model, written once to `directory/tokenizer.json`
    (torch-free: a cpu worker may be first). 256 byte tokens after five specials
    ([PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3, [MASK] 4), no merges: every text encodes, no
    vocabulary file has to ship. Written atomically, so racing processes agree."""
    dest = directory / TOKENIZER
    if dest.is_file():
        return dest
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*specials, *alphabet])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    for token in specials:
        tokenizer.add_special_tokens([token])
    atomic_write_bytes(dest, tokenizer.to_str().encode())
    return dest


def tokenizer_file(settings: ModelSettings) -> Path:
    """The tokenizer.json of the configured PE-AV model, for the cpu stage: a local
    directory's, the tiny one's (created here if missing), or the hub's (only that file is
    downloaded). Raises `CheckpointError`."""
    card = card_for(settings.name)
    if settings.checkpoint is not None:
        path = settings.checkpoint.expanduser() / TOKENIZER
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist", reason="checkpoint_missing")
        return path
    if card.random:
        return tiny_tokenizer(tiny_dir(settings.cache_dir))
    return _download(settings, card, [TOKENIZER]) / TOKENIZER
