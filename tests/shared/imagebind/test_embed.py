"""The Embedder's contract: inputs the pipeline sends, L2-normalised float32 vectors out,
equal to the reference's outputs on its own tiny weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.config import ModelSettings
from shared.errors import ConfigError, PermanentError
from shared.events import Modality
from shared.imagebind.embed import Embedder
from tests.shared.imagebind.model_support import TINY_STATE_DICT, golden_io

TOLERANCE = 1e-5
MakeEmbedder = Callable[..., Embedder]


@pytest.fixture
def make_embedder(tmp_path: Path) -> MakeEmbedder:
    """Embedders over the reference's tiny weights, loaded through the real settings path."""

    def factory(modalities: tuple[str, ...] = ("image", "text", "audio"), **overrides: object) -> Embedder:
        fields: dict[str, object] = {
            "name": "tiny",
            "checkpoint": TINY_STATE_DICT,
            "cache_dir": tmp_path,
            "device": "cpu",
        }
        settings = ModelSettings(**{**fields, **overrides})  # type: ignore[arg-type]
        return Embedder.from_settings(settings, modalities=modalities)

    return factory


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    cache_dir = tmp_path_factory.mktemp("cache")
    settings = ModelSettings(name="tiny", checkpoint=TINY_STATE_DICT, cache_dir=cache_dir, device="cpu")
    return Embedder.from_settings(settings)


def test_all_three_modalities_match_the_reference_as_unit_vectors(embedder: Embedder) -> None:
    io = golden_io()
    out = embedder.embed(
        {
            Modality.IMAGE: io["images_uint8"],
            Modality.TEXT: io["text_tokens"],
            Modality.AUDIO: io["audio"],  # float16 clips, as the preprocessing stage may send
        }
    )
    assert set(out) == {Modality.IMAGE, Modality.TEXT, Modality.AUDIO}
    for modality, key in ((Modality.IMAGE, "images_uint8"), (Modality.TEXT, "text"), (Modality.AUDIO, "audio")):
        assert out[modality].dtype == np.float32
        assert out[modality].shape == (io[f"{key}_unit"].shape[0], embedder.out_dim)
        assert np.abs(out[modality] - io[f"{key}_unit"]).max() <= TOLERANCE
        assert np.allclose(np.linalg.norm(out[modality], axis=1), 1.0, atol=1e-6)


def test_float_images_already_normalised_are_accepted(embedder: Embedder) -> None:
    io = golden_io()
    out = embedder.embed({"image": io["images_float"].astype(np.float32)})
    assert np.abs(out[Modality.IMAGE] - io["images_float_unit"]).max() <= TOLERANCE


def test_audio_items_with_varying_clip_counts_are_averaged_per_item(embedder: Embedder) -> None:
    io = golden_io()
    counts = np.cumsum(io["audio_var_clips"])[:-1]
    items = np.split(io["audio_var"], counts)
    out = embedder.embed({"audio": items})[Modality.AUDIO]
    assert np.abs(out - io["audio_var_unit"]).max() <= TOLERANCE


def test_int32_tokens_and_prepare_cuts_the_batch_after_its_longest_eot(embedder: Embedder) -> None:
    tokens = golden_io()["text_tokens"][:2]  # EOTs at 6 and 1
    prepared = embedder.prepare("text", tokens.astype(np.int32))
    assert tuple(prepared.tensor.shape) == (2, 7) and prepared.tensor.dtype == torch.int64
    assert np.abs(embedder.finish(embedder.forward(prepared)) - golden_io()["text_unit"][:2]).max() <= TOLERANCE


def test_same_input_gives_identical_vectors(embedder: Embedder) -> None:
    io = golden_io()
    first = embedder.embed({"image": io["images_uint8"], "audio": io["audio"]})
    second = embedder.embed({"image": io["images_uint8"], "audio": io["audio"]})
    for modality in first:
        assert np.array_equal(first[modality], second[modality])


def test_exposes_model_name_out_dim_and_fingerprint(embedder: Embedder) -> None:
    import hashlib

    assert embedder.model_name == "imagebind-tiny"
    assert embedder.out_dim == 32
    assert embedder.checkpoint_sha256 == hashlib.sha256(TINY_STATE_DICT.read_bytes()).hexdigest()


def test_default_tiny_model_is_the_random_one_and_says_so(tmp_path: Path) -> None:
    embedder = Embedder.from_settings(ModelSettings(name="tiny", cache_dir=tmp_path, device="cpu"))
    assert embedder.model_name == "imagebind-tiny-random"
    out = embedder.embed({"text": golden_io()["text_tokens"]})[Modality.TEXT]
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_image_only_embedder_holds_no_text_or_audio_weights(make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder(("image",))
    # the vision trunk embeds images and video clips alike
    assert embedder.modalities == {Modality.IMAGE, Modality.VIDEO}
    assert {key.split(".")[1] for key in embedder.model.state_dict()} == {"vision"}
    with pytest.raises(PermanentError) as info:
        embedder.embed({"text": golden_io()["text_tokens"]})
    assert info.value.reason == "modality_not_loaded"


def test_bf16_embedder_stays_close_to_fp32(make_embedder: MakeEmbedder) -> None:
    io = golden_io()
    embedder = make_embedder(dtype="bfloat16")
    assert embedder.compute_dtype == torch.bfloat16
    out = embedder.embed({"image": io["images_uint8"], "text": io["text_tokens"], "audio": io["audio"]})
    for modality, key in ((Modality.IMAGE, "images_uint8"), (Modality.TEXT, "text"), (Modality.AUDIO, "audio")):
        assert out[modality].dtype == np.float32
        cosine = np.sum(out[modality] * io[f"{key}_unit"], axis=1)
        assert cosine.min() > 0.999


@pytest.mark.parametrize(
    ("modality", "inputs", "needle"),
    [
        ("image", np.zeros((2, 3, 224, 200), np.uint8), "shape"),
        ("image", np.zeros((1, 3, 224, 224), np.float64), "uint8 pixels or float32"),
        ("image", np.full((1, 3, 224, 224), np.nan, np.float32), "NaN"),
        ("text", np.zeros((2, 78), np.int64), "shape"),
        ("text", np.full((1, 77), 49408, np.int64), "token ids must lie in"),
        ("text", np.zeros((1, 77), np.float32), "int64 or int32"),
        ("audio", np.zeros((2, 3, 1, 128, 200), np.float32), "shape"),
        ("audio", [np.zeros((0, 1, 128, 204), np.float32)], "clips>=1"),
        ("audio", [], "non-empty"),
        ("audio", np.zeros((1, 3, 1, 128, 204), np.int16), "float16 or float32"),
        ("audio", "not an array", "sequence of clip arrays"),
        ("video", np.zeros((1,)), "video must have shape"),
        ("depth", np.zeros((1,)), "cannot embed modality"),
    ],
)
def test_bad_inputs_raise_invalid_model_input(embedder: Embedder, modality: str, inputs: object, needle: str) -> None:
    with pytest.raises(PermanentError, match=needle) as info:
        embedder.prepare(modality, inputs)  # type: ignore[arg-type]
    assert info.value.reason == "invalid_model_input"


def test_cuda_device_without_cuda_is_a_config_error(
    make_embedder: MakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="OMNIBIND_MODEL__DEVICE"):
        make_embedder(device="cuda")
