"""Checkpoint resolution, download, fingerprinting and strict loading, on real files and a
real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.config import ModelSettings
from shared.errors import CheckpointError
from shared.events import Modality
from shared.imagebind.checkpoint import load_model, resolve_checkpoint, tiny_random_checkpoint
from shared.imagebind.config import HUGE, TINY
from shared.imagebind.embed import Embedder
from shared.imagebind.fingerprint import file_sha256
from shared.imagebind.resolve import TINY_RANDOM_NAME
from tests.shared.imagebind.model_support import TINY_STATE_DICT, golden_io, reference_tiny_state_dict, serve_file


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    return TINY_STATE_DICT.read_bytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _save(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "ckpt.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def _download_settings(tmp_path: Path, url: str, **overrides: object) -> ModelSettings:
    return ModelSettings(name="tiny", url=url, cache_dir=tmp_path / "cache", **overrides)  # type: ignore[arg-type]


# --- strict loading ------------------------------------------------------------------------------


def test_loading_the_reference_file_keeps_only_requested_modalities() -> None:
    model = load_model(TINY_STATE_DICT, TINY, ["text"])
    assert set(model.modality_trunks.keys()) == {"text"}
    assert {k.split(".")[1] for k in model.state_dict()} == {"text"}
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_missing_unexpected_and_misshaped_keys_are_all_named(tmp_path: Path) -> None:
    state = reference_tiny_state_dict()
    del state["modality_trunks.vision.blocks.1.norm_2.bias"]
    state["modality_heads.vision.3.weight"] = torch.zeros(2)
    state["optimizer_step"] = torch.zeros(())
    state["modality_heads.audio.2.weight"] = torch.zeros(7, 64)
    path = _save(tmp_path, state)
    with pytest.raises(CheckpointError) as info:
        load_model(path, TINY, ["vision", "text", "audio"])
    message = str(info.value)
    assert info.value.reason == "checkpoint_incompatible"
    for key in ("modality_trunks.vision.blocks.1.norm_2.bias", "modality_heads.vision.3.weight", "optimizer_step"):
        assert key in message
    assert "modality_heads.audio.2.weight (file [7, 64], model [32, 64])" in message


def test_keys_of_modalities_not_requested_are_not_reported(tmp_path: Path) -> None:
    state = {k: v for k, v in reference_tiny_state_dict().items() if ".vision." in k}
    model = load_model(_save(tmp_path, state), TINY, ["vision"])
    assert set(model.modality_trunks.keys()) == {"vision"}


def test_tiny_file_with_huge_config_reports_shape_mismatches() -> None:
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*file \[64, 3, 2, 14, 14\], model \[1280"):
        load_model(TINY_STATE_DICT, HUGE, ["vision"])


def test_truncated_checkpoint_raises_checkpoint_corrupt(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    path = tmp_path / "truncated.pt"
    path.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 2])
    with pytest.raises(CheckpointError) as info:
        load_model(path, TINY, ["text"])
    assert info.value.reason == "checkpoint_corrupt"


def test_wrapped_state_dict_is_refused_as_not_plain(tmp_path: Path) -> None:
    path = _save(tmp_path, {"model": reference_tiny_state_dict()})  # type: ignore[dict-item]
    with pytest.raises(CheckpointError, match="not a plain state_dict"):
        load_model(path, TINY, ["text"])


def test_missing_local_checkpoint_names_the_setting(tmp_path: Path) -> None:
    settings = ModelSettings(name="tiny", checkpoint=tmp_path / "nope.pt", cache_dir=tmp_path / "cache")
    with pytest.raises(CheckpointError, match="OMNIBIND_MODEL__CHECKPOINT"):
        resolve_checkpoint(settings)


# --- fingerprints ----------------------------------------------------------------------------------


def test_local_checkpoint_is_fingerprinted_with_its_sha256(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    settings = ModelSettings(name="tiny", checkpoint=TINY_STATE_DICT, cache_dir=tmp_path / "cache")
    resolved = resolve_checkpoint(settings)
    assert resolved.sha256 == _sha(checkpoint_bytes)
    assert resolved.model_name == "imagebind-tiny" and resolved.path == TINY_STATE_DICT


def test_configured_sha256_that_differs_rejects_a_local_checkpoint(tmp_path: Path) -> None:
    settings = ModelSettings(name="tiny", checkpoint=TINY_STATE_DICT, cache_dir=tmp_path / "c", sha256="0" * 64)
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(settings)
    assert info.value.reason == "checkpoint_mismatch"


def test_sha256_is_cached_by_size_and_mtime_and_recomputed_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"first")
    cache = tmp_path / "cache"
    assert file_sha256(path, cache) == _sha(b"first")
    (sidecar,) = (cache / "hashes").iterdir()
    # Same size and mtime but a different recorded hash: the cached value is what comes back.
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "sha256": "cached"}))
    assert file_sha256(path, cache) == "cached"
    path.write_bytes(b"second!")
    assert file_sha256(path, cache) == _sha(b"second!")


# --- the tiny random model ----------------------------------------------------------------------


def test_tiny_random_checkpoint_is_created_once_and_labelled_random(tmp_path: Path) -> None:
    settings = ModelSettings(name="tiny", cache_dir=tmp_path)
    first = resolve_checkpoint(settings)
    mtime = first.path.stat().st_mtime_ns
    second = resolve_checkpoint(settings)
    assert first.model_name == TINY_RANDOM_NAME == "imagebind-tiny-random"
    assert "random" in first.path.name
    assert second == first and first.path.stat().st_mtime_ns == mtime
    load_model(first.path, TINY, ["vision", "text", "audio"])  # the same loader as the real file


def test_tiny_random_checkpoint_bytes_do_not_depend_on_the_cache_dir(tmp_path: Path) -> None:
    one = tiny_random_checkpoint(tmp_path / "a")
    two = tiny_random_checkpoint(tmp_path / "b")
    assert one.read_bytes() == two.read_bytes()


def test_racing_creators_of_the_tiny_checkpoint_leave_one_complete_file(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(lambda _: tiny_random_checkpoint(tmp_path), range(4)))
    assert len(set(paths)) == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [paths[0].name]
    load_model(paths[0], TINY, ["text"])


# --- download -------------------------------------------------------------------------------------


def test_download_fetches_once_pins_sha256_and_then_uses_the_cache(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    with serve_file(checkpoint_bytes) as served:
        settings = _download_settings(tmp_path, served.url)
        settings = settings.model_copy(update={"name": "huge"})
        resolved = resolve_checkpoint(settings)
        again = resolve_checkpoint(settings)
    assert served.ranges == [None]  # one request, no second download
    assert resolved == again
    assert resolved.path == tmp_path / "cache" / "checkpoints" / "imagebind_huge.pth"
    assert resolved.path.read_bytes() == checkpoint_bytes
    assert resolved.sha256 == _sha(checkpoint_bytes)
    pin = resolved.path.with_name("imagebind_huge.pth.sha256").read_text()
    assert pin == f"{_sha(checkpoint_bytes)}  imagebind_huge.pth\n"
    assert not resolved.path.with_name("imagebind_huge.pth.part").exists()


def test_download_resumes_a_partial_part_file_with_a_range_request(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    dest = tmp_path / "cache" / "checkpoints" / "imagebind_huge.pth"
    dest.parent.mkdir(parents=True)
    half = len(checkpoint_bytes) // 2
    dest.with_name("imagebind_huge.pth.part").write_bytes(checkpoint_bytes[:half])
    with serve_file(checkpoint_bytes) as served:
        settings = _download_settings(tmp_path, served.url, sha256=_sha(checkpoint_bytes))
        resolved = resolve_checkpoint(settings.model_copy(update={"name": "huge"}))
    assert served.ranges == [f"bytes={half}-"]
    assert dest.read_bytes() == checkpoint_bytes
    assert resolved.sha256 == _sha(checkpoint_bytes)


def test_download_interrupted_mid_file_reconnects_and_resumes(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    with serve_file(checkpoint_bytes, drop_first_after=3_000_000) as served:
        settings = _download_settings(tmp_path, served.url)
        resolved = resolve_checkpoint(settings.model_copy(update={"name": "huge"}))
    assert served.ranges[0] is None and served.ranges[1] == "bytes=3000000-"
    assert resolved.path.read_bytes() == checkpoint_bytes


def test_server_without_range_support_restarts_the_download_cleanly(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    dest = tmp_path / "cache" / "checkpoints" / "imagebind_huge.pth"
    dest.parent.mkdir(parents=True)
    dest.with_name("imagebind_huge.pth.part").write_bytes(b"stale bytes from an older attempt")
    with serve_file(checkpoint_bytes, honour_range=False) as served:
        resolve_checkpoint(_download_settings(tmp_path, served.url).model_copy(update={"name": "huge"}))
    assert dest.read_bytes() == checkpoint_bytes


def test_complete_part_file_left_by_a_crash_is_verified_and_used(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    dest = tmp_path / "cache" / "checkpoints" / "imagebind_huge.pth"
    dest.parent.mkdir(parents=True)
    dest.with_name("imagebind_huge.pth.part").write_bytes(checkpoint_bytes)
    with serve_file(checkpoint_bytes) as served:
        settings = _download_settings(tmp_path, served.url, sha256=_sha(checkpoint_bytes))
        resolved = resolve_checkpoint(settings.model_copy(update={"name": "huge"}))
    assert served.ranges == [f"bytes={len(checkpoint_bytes)}-"]  # answered 416: nothing left to fetch
    assert resolved.path == dest and dest.read_bytes() == checkpoint_bytes


def test_checksum_mismatch_is_rejected_and_leaves_no_poisoned_cache(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    with serve_file(checkpoint_bytes) as served:
        settings = _download_settings(tmp_path, served.url, sha256="ab" * 32).model_copy(update={"name": "huge"})
        with pytest.raises(CheckpointError) as info:
            resolve_checkpoint(settings)
    assert info.value.reason == "checkpoint_mismatch"
    leftovers = sorted(p.name for p in (tmp_path / "cache" / "checkpoints").iterdir())
    assert leftovers == ["imagebind_huge.pth.lock"]


def test_cached_file_that_no_longer_matches_its_pin_is_refused(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    with serve_file(checkpoint_bytes) as served:
        settings = _download_settings(tmp_path, served.url).model_copy(update={"name": "huge"})
        resolved = resolve_checkpoint(settings)
    corrupted = bytearray(checkpoint_bytes)
    corrupted[1000] ^= 0xFF
    resolved.path.write_bytes(bytes(corrupted))
    os.utime(resolved.path, ns=(1, 1))  # a different mtime forces a re-hash
    with pytest.raises(CheckpointError, match="its pin"):
        resolve_checkpoint(settings)


def test_unreachable_server_fails_at_once_with_the_local_copy_hint(tmp_path: Path) -> None:
    with serve_file(b"x") as served:
        url = served.url  # the port is closed again once the server stops
    settings = _download_settings(tmp_path, url).model_copy(update={"name": "huge"})
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(settings)
    assert info.value.reason == "checkpoint_download"
    assert "OMNIBIND_MODEL__CHECKPOINT" in str(info.value)


def test_http_error_from_the_server_is_a_checkpoint_error(tmp_path: Path) -> None:
    with serve_file(b"x") as served:
        settings = _download_settings(tmp_path, served.url + "-missing").model_copy(update={"name": "huge"})
        with pytest.raises(CheckpointError, match="404"):
            resolve_checkpoint(settings)


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((start, end))
    return ranges


def test_cpu_fp32_weights_stay_backed_by_the_memory_mapped_file(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(checkpoint_bytes)
    model = load_model(path, TINY, ["vision", "text", "audio"])
    ranges = _mapped_ranges(path.resolve())
    assert ranges, "the checkpoint is not memory-mapped"
    assert all(any(a <= p.data_ptr() < b for a, b in ranges) for p in model.parameters())


def test_downloaded_checkpoint_embeds_all_three_modalities_like_the_reference(
    tmp_path: Path, checkpoint_bytes: bytes
) -> None:
    with serve_file(checkpoint_bytes) as served:
        downloaded = resolve_checkpoint(_download_settings(tmp_path, served.url).model_copy(update={"name": "huge"}))
    settings = ModelSettings(
        name="tiny", checkpoint=downloaded.path, sha256=downloaded.sha256, cache_dir=tmp_path / "cache", device="cpu"
    )
    embedder = Embedder.from_settings(settings)
    io = golden_io()
    out = embedder.embed({"image": io["images_uint8"], "text": io["text_tokens"], "audio": io["audio"]})
    assert embedder.checkpoint_sha256 == downloaded.sha256
    for modality, key in ((Modality.IMAGE, "images_uint8"), (Modality.TEXT, "text"), (Modality.AUDIO, "audio")):
        assert np.abs(out[modality] - io[f"{key}_unit"]).max() <= 1e-5
