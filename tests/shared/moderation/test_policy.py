from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.events import Band, Modality
from shared.moderation.policy import load_policy, parse_policy
from tests.shared.moderation.policies import BASE, write_policy


def test_default_policy_loads_with_the_nine_categories_and_prompts_for_every_modality() -> None:
    policy = load_policy()
    assert set(policy.categories) == {
        "violence", "sexual", "hate_symbols", "self_harm", "weapons", "gore", "drugs", "harassment", "spam",
    }  # fmt: skip
    assert all(policy.contrast.for_modality(m) for m in (Modality.IMAGE, Modality.TEXT, Modality.AUDIO))
    assert policy.categories["weapons"].prompts.audio, "audio has its own categories (gunshots)"
    assert policy.categories["sexual"].detectors["nudenet"].labels
    assert len(policy.version) == 16


def test_version_is_the_content_hash_not_the_formatting(tmp_path: Path) -> None:
    reformatted = "# a comment\n" + BASE.replace("temperature = 0.05", "temperature   =   0.05  # why")
    same = load_policy(write_policy(tmp_path, reformatted, "a.toml"))
    assert same.version == load_policy(write_policy(tmp_path, BASE, "b.toml")).version
    changed = load_policy(write_policy(tmp_path, BASE.replace("review = 0.5", "review = 0.55"), "c.toml"))
    assert changed.version != same.version


def test_thresholds_give_bands_and_per_modality_overrides_apply() -> None:
    text = BASE + "[categories.violence.thresholds.audio]\nreview = 0.7\nblock = 0.9\n"
    category = parse_policy(text).categories["violence"]
    assert category.thresholds_for(Modality.IMAGE).band(0.49) is Band.ALLOW
    assert category.thresholds_for(Modality.IMAGE).band(0.5) is Band.REVIEW
    assert category.thresholds_for(Modality.IMAGE).band(0.8) is Band.BLOCK
    assert category.thresholds_for(Modality.AUDIO).band(0.8) is Band.REVIEW


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        (BASE.replace("review = 0.5", "review = 1.5"), "categories.violence.review"),
        (BASE.replace("review = 0.5", "review = 0.95"), "categories.violence"),
        (BASE.replace("review = 0.5", "reveiw = 0.5"), "categories.violence.reveiw"),
        (BASE.replace("temperature = 0.05", "temperature = 0"), "scoring.temperature"),
        (BASE.replace('audio = ["safe sound"]\n', ""), "contrast.audio"),
        (BASE.replace("max_distance = 0.05", 'max_distance = "far"'), "blocklist.max_distance"),
        (
            BASE + '[categories.spam.detectors.nudenet]\nlabels = ["NOSE"]\nreview = 0.1\nblock = 0.2\n',
            "categories.spam",
        ),
        (BASE + "[categories.Bad-Name]\nreview = 0.1\nblock = 0.2\n", "categories"),
    ],
)
def test_malformed_policy_raises_config_error_naming_the_field(tmp_path: Path, broken: str, field: str) -> None:
    path = write_policy(tmp_path, broken)
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)
    assert field in str(caught.value)


def test_invalid_toml_and_missing_file_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(write_policy(tmp_path, "name = ["))
    with pytest.raises(ConfigError, match="OMNIBIND_MODERATION__POLICY"):
        load_policy(tmp_path / "missing.toml")


def test_prompt_texts_lists_each_prompt_once_across_modalities() -> None:
    prompts = parse_policy(BASE).prompt_texts()
    assert len(prompts) == len(set(prompts))
    assert {"safe image", "violent sound", "spam text"} <= set(prompts)
