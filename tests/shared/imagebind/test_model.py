"""Our ImageBind model against Meta's reference: golden outputs on the reference's own tiny
weights, and the huge configuration's exact keys and shapes (built on the meta device)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.imagebind.config import HUGE, MODEL_MODALITIES, TINY
from shared.imagebind.model import ImageBindModel, build_model, place, random_state_dict
from shared.imagebind.normalize import normalize_image
from tests.shared.imagebind.model_support import GOLDEN_DIR, golden_io, reference_tiny_state_dict

FP32_TOLERANCE = 1e-5


def _reference_tiny_model(modalities=MODEL_MODALITIES) -> ImageBindModel:
    model = build_model(TINY, modalities)
    state = {k: v for k, v in reference_tiny_state_dict().items() if k.split(".")[1] in model.modalities}
    model.load_state_dict(state, strict=True, assign=True)
    return model


@pytest.fixture(scope="module")
def tiny_model() -> ImageBindModel:
    return _reference_tiny_model()


def _max_diff(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(ours.float().numpy() - reference).max())


def test_vision_matches_reference_on_float_images(tiny_model: ImageBindModel) -> None:
    io = golden_io()
    with torch.inference_mode():
        out = tiny_model.embed_vision(torch.from_numpy(io["images_float"]).float())
    assert _max_diff(out, io["images_float_raw"]) <= FP32_TOLERANCE


def test_vision_matches_reference_on_uint8_images_normalised_by_us(tiny_model: ImageBindModel) -> None:
    io = golden_io()
    with torch.inference_mode():
        out = tiny_model.embed_vision(normalize_image(torch.from_numpy(io["images_uint8"])))
    assert _max_diff(out, io["images_uint8_raw"]) <= FP32_TOLERANCE


def test_text_matches_reference_including_scale(tiny_model: ImageBindModel) -> None:
    io = golden_io()
    with torch.inference_mode():
        out = tiny_model.embed_text(torch.from_numpy(io["text_tokens"]))
    assert _max_diff(out, io["text_raw"]) <= FP32_TOLERANCE
    # the fixture's learned scale is 30, not CLIP's initial 14.3: the loaded value is used
    assert np.allclose(np.linalg.norm(out.numpy(), axis=1), 30.0, atol=1e-4)


def test_audio_matches_reference_with_clips_averaged_after_scaling(tiny_model: ImageBindModel) -> None:
    io = golden_io()
    with torch.inference_mode():
        out = tiny_model({"audio": torch.from_numpy(io["audio"]).float()})["audio"]
    assert _max_diff(out, io["audio_raw"]) <= FP32_TOLERANCE


def test_audio_items_with_varying_clip_counts_match_reference_per_item(tiny_model: ImageBindModel) -> None:
    io = golden_io()
    counts = [int(n) for n in io["audio_var_clips"]]
    with torch.inference_mode():
        out = tiny_model.embed_audio(torch.from_numpy(io["audio_var"]).float(), counts)
    assert out.shape == (len(counts), TINY.out_dim)
    assert _max_diff(out, io["audio_var_raw"]) <= FP32_TOLERANCE


def test_long_text_fixture_follows_fixed_truncation_with_eot_last() -> None:
    meta = json.loads((GOLDEN_DIR / "meta.json").read_text())
    tokens = golden_io()["text_tokens"]
    assert meta["long_text_ends_with_eot_at_76"] is True
    assert tokens[-1, 76] == 49407 and tokens.argmax(axis=1)[-1] == 76


def test_text_cut_after_eot_equals_full_length_forward(tiny_model: ImageBindModel) -> None:
    tokens = torch.from_numpy(golden_io()["text_tokens"][:4])  # longest EOT at 31, not 76
    cut = int(tokens.argmax(dim=1).max()) + 1
    assert cut < tokens.shape[1]
    with torch.inference_mode():
        full = tiny_model.embed_text(tokens)
        short = tiny_model.embed_text(tokens[:, :cut])
    torch.testing.assert_close(short, full, rtol=0, atol=1e-5)


def test_huge_config_has_exactly_the_reference_keys_and_shapes_for_our_modalities() -> None:
    reference = json.loads((GOLDEN_DIR / "huge_state_dict_shapes.json").read_text())
    wanted = {k: v for k, v in reference.items() if k.split(".")[1] in MODEL_MODALITIES}
    ours = {k: list(v.shape) for k, v in build_model(HUGE).state_dict().items()}
    assert ours == wanted
    assert len(reference) == 1311


def test_huge_vision_text_audio_count_1_073_billion_parameters() -> None:
    model = build_model(HUGE)
    assert sum(t.numel() for t in model.state_dict().values()) == pytest.approx(1.073e9, rel=1e-3)
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("modalities", [("vision",), ("text",), ("audio",), ("vision", "audio")])
def test_building_some_modalities_holds_no_other_part(modalities: tuple[str, ...]) -> None:
    model = build_model(TINY, modalities)  # type: ignore[arg-type]
    for part in (model.modality_preprocessors, model.modality_trunks, model.modality_heads):
        assert set(part.keys()) == set(modalities)
    assert {key.split(".")[1] for key in model.state_dict()} == set(modalities)


def test_vision_stem_conv2d_with_summed_kernel_equals_reference_conv3d_on_repeated_frames() -> None:
    model = _reference_tiny_model(("vision",))
    stem = model.modality_preprocessors["vision"].rgbt_stem
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    video = images.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # (B, 3, 2, H, W): the reference's PadIm2Video
    expected = F.conv3d(video, stem.proj[1].weight, stride=(2, 14, 14)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(stem(images), expected, rtol=0, atol=1e-5)


def test_bf16_weights_give_the_numbers_of_autocast_over_fp32_weights() -> None:
    io = golden_io()
    images = torch.from_numpy(io["images_float"]).float()
    audio = torch.from_numpy(io["audio"]).float()
    fp32 = _reference_tiny_model()
    bf16 = place(_reference_tiny_model(), torch.device("cpu"), torch.bfloat16)
    assert bf16.modality_trunks["vision"].blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert bf16.modality_trunks["vision"].blocks[0].norm_1.weight.dtype == torch.float32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = fp32({"vision": images, "audio": audio})
        got = bf16({"vision": images, "audio": audio})
    for modality in ("vision", "audio"):
        torch.testing.assert_close(got[modality].float(), expected[modality].float(), rtol=0, atol=1e-6)
        unit = F.normalize(got[modality].float(), dim=-1).numpy()
        assert np.abs(unit - io[f"{'images_float' if modality == 'vision' else modality}_unit"]).max() < 2e-2


def test_random_state_dict_is_seeded_and_fits_the_model() -> None:
    first, second = random_state_dict(TINY, seed=3), random_state_dict(TINY, seed=3)
    assert first.keys() == build_model(TINY).state_dict().keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(
        first["modality_trunks.text.blocks.0.mlp.fc1.weight"],
        random_state_dict(TINY, seed=4)["modality_trunks.text.blocks.0.mlp.fc1.weight"],
    )
