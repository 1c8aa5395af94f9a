"""Per-model sections of the moderation policy: thresholds, prompts and blocklist rules of
one model's scores, merged over the default sections for that model only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import Settings
from shared.errors import ConfigError
from shared.events import Band, Modality
from shared.moderation.policy import load_model_policy, load_policy, parse_policy
from tests.shared.moderation.policies import BASE, write_policy

PE_SECTION = """
[models.pe-av-tiny.blocklist]
max_distance = 0.2
[models.pe-av-tiny.categories.violence]
review = 0.3
block = 0.45
[models.pe-av-tiny.categories.violence.prompts]
text = ["a violent threat, as PE-AV reads it"]
"""


def test_a_model_section_overrides_only_what_it_names_for_that_model_only() -> None:
    policy = parse_policy(BASE + PE_SECTION)
    pe = policy.for_model("pe-av-tiny")
    assert pe.model == "pe-av-tiny"
    violence = pe.categories["violence"]
    assert (violence.review, violence.block) == (0.3, 0.45)
    assert violence.prompts.text == ["a violent threat, as PE-AV reads it"]
    assert violence.prompts.image == ["violent image"], "what the section leaves out is the default's"
    assert pe.blocklist.max_distance == 0.2 and pe.blocklist.band == "block"
    assert pe.categories["spam"] == policy.categories["spam"]
    assert violence.thresholds_for(Modality.TEXT).band(0.4) is Band.REVIEW
    assert policy.categories["violence"].thresholds_for(Modality.TEXT).band(0.4) is Band.ALLOW

    imagebind = policy.for_model("huge")
    assert imagebind is policy, "a model without a section is decided under the default sections"
    assert len({policy.version, pe.version}) == 2, "decisions name which model's thresholds made them"
    assert "pe-av-tiny-random" not in pe.prompt_texts()


def test_a_policy_without_sections_keeps_the_version_it_had_before_sections_existed() -> None:
    # Versions computed by the policy module before per-model sections (stored decisions name them).
    assert parse_policy(BASE).version == "00c13e3fd52f5885"
    assert load_policy().version == "88f706fb55dea43a"
    assert "models" not in json.loads(parse_policy(BASE).canonical_json())


def test_a_section_for_an_unknown_model_or_with_a_bad_field_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match="unknown model 'clip'"):
        parse_policy(BASE + "[models.clip.categories.violence]\nreview = 0.1\n")
    with pytest.raises(ConfigError, match=r"models\.pe-av-tiny: categories\.violence.*must not exceed"):
        parse_policy(BASE + "[models.pe-av-tiny.categories.violence]\nreview = 0.9\nblock = 0.5\n")
    with pytest.raises(ConfigError, match="cannot differ per model"):
        parse_policy(BASE + '[models.pe-av-tiny]\nname = "other"\n')


def test_the_policy_a_process_decides_under_is_its_models_section(tmp_path: Path) -> None:
    path = write_policy(tmp_path, BASE + PE_SECTION)
    assert load_model_policy(path, "pe-av-tiny").categories["violence"].review == 0.3
    assert load_model_policy(path, "tiny").categories["violence"].review == 0.5
    assert load_policy(path).for_model_label("pe-av-tiny-random").model == "pe-av-tiny"


def test_the_workers_moderation_runtime_resolves_the_section_of_their_model(tmp_path: Path, redis_conn) -> None:
    from workers.moderation import ModerationRuntime

    path = write_policy(tmp_path, BASE + PE_SECTION)
    tenant = write_policy(tmp_path, BASE + PE_SECTION.replace("0.3", "0.25"), "acme.toml")
    settings = Settings(
        data_dir=tmp_path,
        model={"name": "pe-av-tiny"},
        moderation={"policy": path, "tenant_policies": {"acme": tenant}},
    )
    runtime = ModerationRuntime(settings, redis_conn)
    assert runtime.policy.model == "pe-av-tiny" and runtime.policy.categories["violence"].review == 0.3
    assert runtime.policy_for("acme").categories["violence"].review == 0.25
