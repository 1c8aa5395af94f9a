"""PE-AV behind the model port, on transformers' PeAudioVideoModel: the tiny random model is
saved in the real format (save_pretrained: config.json + model.safetensors, plus a tokenizer
made here) and loaded by the real loading code; what it embeds is unit-length, batch-stable,
deterministic, and a text gets one vector per target head."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from shared.config import GpuSettings, ModelSettings
from shared.errors import CheckpointError
from shared.events import Modality
from shared.models.loader import load_backend
from shared.models.perception import PerceptionBackend, tiny_config
from shared.models.perception_files import CONFIG, TOKENIZER, WEIGHTS, tiny_dir
from shared.models.port import EmbeddingBackend
from shared.models.preprocessing import preprocessor_for
from tests.support.stack import SAMPLES
from workers.gpu import GpuRunner


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pe-cache")


@pytest.fixture(scope="module")
def settings(cache: Path) -> ModelSettings:
    return ModelSettings(name="pe-av-tiny", cache_dir=cache, device="cpu")


@pytest.fixture(scope="module")
def backend(settings: ModelSettings) -> PerceptionBackend:
    loaded = load_backend(settings)
    assert isinstance(loaded, PerceptionBackend)
    return loaded


def embed(backend: EmbeddingBackend, modality: Modality, rows: list[np.ndarray], head: str = "") -> np.ndarray:
    return np.asarray(backend.finish(backend.forward(backend.prepare(modality, np.stack(rows), head))))


def copy_of_tiny(settings: ModelSettings, target: Path) -> Path:
    shutil.copytree(tiny_dir(settings.cache_dir), target)
    return target


def test_the_tiny_model_is_saved_in_the_real_format_and_loads_to_the_seeded_weights(
    backend: PerceptionBackend, settings: ModelSettings
) -> None:
    directory = tiny_dir(settings.cache_dir)
    assert {CONFIG, WEIGHTS, TOKENIZER} <= {p.name for p in directory.iterdir()}
    assert backend.model_name == "pe-av-tiny-random"
    assert backend.checkpoint_sha256 == hashlib.sha256((directory / WEIGHTS).read_bytes()).hexdigest()
    assert isinstance(backend, EmbeddingBackend)

    from transformers import PeAudioVideoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = PeAudioVideoModel(tiny_config()).state_dict()
    loaded = backend.model.state_dict()
    assert loaded, "nothing loaded"
    for key, tensor in loaded.items():
        assert torch.equal(tensor, reference[key]), key
    assert backend.model.audio_video_encoder is None, "the joint encoder omnibind never runs is dropped"


def test_every_modality_embeds_unit_length_the_same_alone_as_in_a_batch(
    backend: PerceptionBackend, settings: ModelSettings
) -> None:
    pre = preprocessor_for(settings)
    images = [
        pre.image(Image.open(SAMPLES / name).convert("RGB"), max_pixels=10**8)
        for name in ("rgb_landscape_640x427.jpg", "small_100x150.png")
    ]
    texts = [pre.text("a dog barking in the rain"), pre.text("a red circle")]
    audio = pre.audio((SAMPLES / "clip_44100_1s.mp3").read_bytes(), max_duration_s=60, mode="reference", format=None)
    for modality, rows in ((Modality.IMAGE, images), (Modality.TEXT, texts), (Modality.AUDIO, [audio, audio])):
        together = embed(backend, modality, rows)
        assert together.shape == (2, backend.out_dim) and together.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
        for row, vector in zip(rows, together, strict=True):
            np.testing.assert_allclose(embed(backend, modality, [row])[0], vector, atol=1e-5)
    assert not np.allclose(embed(backend, Modality.IMAGE, images[:1]), embed(backend, Modality.IMAGE, images[1:]))


def test_a_text_query_has_one_vector_per_target_head(backend: PerceptionBackend, settings: ModelSettings) -> None:
    heads = backend.heads_for_query(Modality.TEXT)
    assert heads == {Modality.IMAGE: "video", Modality.TEXT: "video", Modality.AUDIO: "audio", Modality.VIDEO: "video"}
    assert set(backend.heads_for_query(Modality.IMAGE).values()) == {"video"}, "video and audio are one pair"
    tokens = preprocessor_for(settings).text("a dog barking")
    for_audio = embed(backend, Modality.TEXT, [tokens], "audio")[0]
    for_video = embed(backend, Modality.TEXT, [tokens], "video")[0]
    assert not np.allclose(for_audio, for_video), "two heads, two vectors"
    np.testing.assert_allclose(embed(backend, Modality.TEXT, [tokens])[0], for_video, atol=1e-6)


def test_two_loads_give_the_same_fingerprint_and_vectors(backend: PerceptionBackend, settings: ModelSettings) -> None:
    again = load_backend(settings)
    assert again.checkpoint_sha256 == backend.checkpoint_sha256
    tokens = preprocessor_for(settings).text("the same words")
    np.testing.assert_array_equal(embed(backend, Modality.TEXT, [tokens]), embed(again, Modality.TEXT, [tokens]))


def test_a_local_directory_is_loaded_checked_against_its_sha256_and_refused_when_incomplete(
    backend: PerceptionBackend, settings: ModelSettings, tmp_path: Path
) -> None:
    local = copy_of_tiny(settings, tmp_path / "pe-av-tiny")
    from_dir = load_backend(settings.model_copy(update={"checkpoint": local, "sha256": backend.checkpoint_sha256}))
    assert from_dir.model_name == "pe-av-tiny" and from_dir.checkpoint_sha256 == backend.checkpoint_sha256

    with pytest.raises(CheckpointError) as mismatch:
        load_backend(settings.model_copy(update={"checkpoint": local, "sha256": "0" * 64}))
    assert mismatch.value.reason == "checkpoint_mismatch"

    (local / TOKENIZER).unlink()
    with pytest.raises(CheckpointError) as missing:
        load_backend(settings.model_copy(update={"checkpoint": local}))
    assert missing.value.reason == "checkpoint_missing" and TOKENIZER in str(missing.value)


def test_truncated_weights_and_weights_that_do_not_fit_the_config_are_refused(
    backend: PerceptionBackend, settings: ModelSettings, tmp_path: Path
) -> None:
    truncated = copy_of_tiny(settings, tmp_path / "truncated")
    (truncated / WEIGHTS).write_bytes((truncated / WEIGHTS).read_bytes()[:4096])
    with pytest.raises(CheckpointError) as corrupt:
        load_backend(settings.model_copy(update={"checkpoint": truncated}))
    assert corrupt.value.reason == "checkpoint_corrupt"

    wider = copy_of_tiny(settings, tmp_path / "wider")
    config = json.loads((wider / CONFIG).read_text())
    config["text_config"]["intermediate_size"] = 48  # the file's MLP weights are 64 wide
    (wider / CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as incompatible:
        load_backend(settings.model_copy(update={"checkpoint": wider}))
    assert incompatible.value.reason == "checkpoint_incompatible"

    # transformers would initialise the missing head at random, with only a warning
    gap = copy_of_tiny(settings, tmp_path / "gap")
    tensors = load_file(gap / WEIGHTS)
    dropped = sorted(k for k in tensors if k.startswith("video_model.video_head."))
    assert dropped
    save_file({k: v for k, v in tensors.items() if k not in dropped}, gap / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as missing:
        load_backend(settings.model_copy(update={"checkpoint": gap}))
    assert missing.value.reason == "checkpoint_incompatible" and dropped[0] in str(missing.value)


def test_an_offline_hub_download_fails_fast_and_says_how_to_use_a_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as caught:
        load_backend(ModelSettings(name="pe-av-base", cache_dir=tmp_path, device="cpu"))
    assert caught.value.reason == "checkpoint_download"
    assert "OMNIBIND_MODEL__CHECKPOINT" in str(caught.value) and "facebook/pe-av-base" in str(caught.value)


def test_the_gpu_runner_batches_pe_av_items_by_head(backend: PerceptionBackend, settings: ModelSettings) -> None:
    runner = GpuRunner(backend, GpuSettings(max_batch=4, max_wait_ms=5), preprocessor_for(settings))
    try:
        tokens = runner.preprocessor.text("a dog barking")
        by_runner = runner.embed(Modality.TEXT, tokens, timeout_s=30, head="audio")
        np.testing.assert_allclose(by_runner, embed(backend, Modality.TEXT, [tokens], "audio")[0], atol=1e-5)
        wave = runner.preprocessor.audio(
            (SAMPLES / "blip_16k_300samples.wav").read_bytes(), max_duration_s=60, mode="reference", format=None
        )
        assert wave.shape == (1920,), "shorter than one 40 ms hop: zero-padded to one"
        assert runner.embed(Modality.AUDIO, wave, timeout_s=30).shape == (backend.out_dim,)
    finally:
        runner.close()
