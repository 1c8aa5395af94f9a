from __future__ import annotations

import numpy as np
import pytest

from shared.events import Modality
from shared.moderation.policy import parse_policy
from shared.moderation.zeroshot import build_prompt_groups, zero_shot_scores
from tests.shared.moderation.policies import BASE


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def random_prompt_vectors(prompts: list[str], dim: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p: unit(rng.standard_normal(dim)) for p in prompts}


def test_scores_lie_in_unit_interval_for_every_category_of_the_modality() -> None:
    policy = parse_policy(BASE)
    vectors = random_prompt_vectors(policy.prompt_texts())
    groups = build_prompt_groups(policy, Modality.TEXT, vectors)
    assert groups is not None
    rng = np.random.default_rng(1)
    for _ in range(50):
        scores = zero_shot_scores(groups, rng.standard_normal(32) * 10)
        assert set(scores) == {"violence", "spam"}
        assert all(0.0 <= s <= 1.0 for s in scores.values())


def test_an_upload_near_a_category_prompt_scores_high_and_near_safe_scores_low() -> None:
    policy = parse_policy(BASE)
    vectors = random_prompt_vectors(policy.prompt_texts())
    groups = build_prompt_groups(policy, Modality.IMAGE, vectors)
    assert groups is not None and groups.categories == ("violence",)
    assert zero_shot_scores(groups, vectors["violent image"])["violence"] > 0.99
    assert zero_shot_scores(groups, vectors["safe image"])["violence"] < 0.01


def test_score_matches_the_documented_formula() -> None:
    policy = parse_policy(BASE)
    vectors = random_prompt_vectors(policy.prompt_texts())
    groups = build_prompt_groups(policy, Modality.TEXT, vectors)
    assert groups is not None
    v = unit(np.random.default_rng(3).standard_normal(32))
    t = policy.scoring.temperature

    def log_mean_exp(prompts: list[str]) -> float:
        return float(np.log(np.mean([np.exp(float(vectors[p] @ v) / t) for p in prompts])))

    safe = log_mean_exp(["safe text", "another safe text"])
    violence = log_mean_exp(["violent text", "more violent text"])
    expected = np.exp(violence) / (np.exp(violence) + np.exp(safe))
    assert zero_shot_scores(groups, v)["violence"] == pytest.approx(expected, rel=1e-6)


def test_a_category_is_scored_independently_of_the_others() -> None:
    policy = parse_policy(BASE)
    more = parse_policy(
        BASE + '[categories.drugs]\nreview = 0.5\nblock = 0.9\n[categories.drugs.prompts]\ntext = ["drug text"]\n'
    )
    vectors = random_prompt_vectors(more.prompt_texts())
    v = unit(np.random.default_rng(4).standard_normal(32))
    before = build_prompt_groups(policy, Modality.TEXT, vectors)
    after = build_prompt_groups(more, Modality.TEXT, vectors)
    assert before is not None and after is not None
    assert zero_shot_scores(before, v)["violence"] == pytest.approx(zero_shot_scores(after, v)["violence"])


def test_modality_without_prompts_has_no_groups_and_wrong_dimension_raises() -> None:
    policy = parse_policy(BASE.replace('audio = ["violent sound"]\n', "").replace('audio = ["safe sound"]\n', ""))
    vectors = random_prompt_vectors(policy.prompt_texts())
    assert build_prompt_groups(policy, Modality.AUDIO, vectors) is None
    groups = build_prompt_groups(policy, Modality.TEXT, vectors)
    assert groups is not None
    with pytest.raises(ValueError, match="dimensions"):
        zero_shot_scores(groups, np.ones(1024, dtype=np.float32))
