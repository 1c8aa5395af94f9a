"""The cpu side of the model port (torch-free): each family's wire arrays, chosen by
OMNIBIND_MODEL__NAME, from the same decoded uploads; the licence of every loadable model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.config import LimitSettings, ModelSettings
from shared.events import Modality, UploadEvent
from shared.models.catalog import CATALOG, card_for
from shared.models.preprocessing import PE_AUDIO_HOP, ImageBindPreprocessor, preprocessor_for
from tests.support.stack import SAMPLES
from workers.preprocess import prepare_upload


def test_every_loadable_model_states_its_licence_and_only_pe_av_allows_commercial_use() -> None:
    assert set(CATALOG) == set(ModelSettings.model_fields["name"].annotation.__args__)  # type: ignore[union-attr]
    assert {name for name, card in CATALOG.items() if card.commercial} == {"pe-av-small", "pe-av-base", "pe-av-large"}
    assert "non-commercial" in card_for("huge").licence and "Apache-2.0" in card_for("pe-av-base").licence
    assert all(card.licence for card in CATALOG.values())
    with pytest.raises(KeyError, match="pe-av-base"):
        card_for("clip")


@pytest.fixture
def pe(tmp_path: Path) -> ModelSettings:
    return ModelSettings(name="pe-av-tiny", cache_dir=tmp_path)


def upload(path: Path) -> UploadEvent:
    return UploadEvent.model_validate({"object": {"bucket": "b", "key": f"u/{path.name}"}, "source": "test"})


def test_pe_av_wire_arrays_differ_from_imagebind_ones_for_the_same_uploads(pe: ModelSettings) -> None:
    limits = LimitSettings()
    pre = preprocessor_for(pe)
    assert isinstance(preprocessor_for(ModelSettings(name="huge")), ImageBindPreprocessor)
    cases = {
        "rgb_landscape_640x427.jpg": (Modality.IMAGE, (3, 32, 32), np.uint8, (3, 224, 224)),
        "clip_44100_1s.mp3": (Modality.AUDIO, (48_000,), np.float16, (3, 1, 128, 204)),
    }
    for name, (modality, pe_shape, dtype, imagebind_shape) in cases.items():
        data = (SAMPLES / name).read_bytes()
        ours = prepare_upload(upload(SAMPLES / name), data, limits, preprocessor=pre)
        theirs = prepare_upload(upload(SAMPLES / name), data, limits)
        assert ours.modality is theirs.modality is modality
        assert ours.array.shape == pe_shape and ours.array.dtype == dtype
        assert theirs.array.shape == imagebind_shape


def test_pe_av_audio_is_48k_mono_cut_to_its_longest_and_padded_to_whole_hops(pe: ModelSettings) -> None:
    pre = preprocessor_for(pe)
    card = card_for("pe-av-tiny")
    five_s = pre.audio(
        (SAMPLES / "clips_16k_5s_mono.wav").read_bytes(), max_duration_s=60, mode="reference", format=None
    )
    assert five_s.shape == (int(card.max_audio_s * 48_000),), "5 s cut to the tiny model's 4 s"
    odd = pre.audio(
        (SAMPLES / "music_48k_1250ms_mono.wav").read_bytes(), max_duration_s=60, mode="reference", format=None
    )
    assert len(odd) % PE_AUDIO_HOP == 0 and 60_000 <= len(odd) < 60_000 + PE_AUDIO_HOP


def test_pe_av_text_uses_the_models_own_tokenizer_padded_to_a_fixed_length(pe: ModelSettings) -> None:
    pre = preprocessor_for(pe)
    short, long = pre.text("a dog"), pre.text("a dog barking in the rain " * 10)
    n = card_for("pe-av-tiny").text_tokens
    assert short.shape == long.shape == (n,) and short.dtype == np.int32
    assert short[0] == 1 and 2 in short and short[-1] == 0, "[CLS] ... [SEP] then [PAD]"
    assert long[-1] == 2, "cut to length, still ending in [SEP]"
    assert not np.array_equal(pre.text("a cat"), short)
    assert (Path(pe.cache_dir) / "checkpoints" / "pe-av-tiny-random-seed0" / "tokenizer.json").is_file()
