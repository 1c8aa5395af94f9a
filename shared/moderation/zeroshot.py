"""Zero-shot category scores in the shared ImageBind space (pure).

For an upload of modality m with unit embedding v, and unit text-prompt embeddings p_j:

    s_j  = cos(v, p_j) = v · p_j                          (cosine similarity)
    z_j  = s_j / T                                        (T: the policy's temperature for m)
    L_G  = log( (1/|G|) · Σ_{j∈G} exp(z_j) )              (log-mean-exp over a prompt group G)
    score(c) = exp(L_c) / (exp(L_c) + exp(L_safe))  =  σ(L_c − L_safe)

i.e. a two-way softmax between category c's prompts and the policy's "safe" contrast
prompts for m. Each category is scored on its own (adding a category does not move the
others' scores), and the mean inside the log makes the score independent of how many
prompts a group has. T = 0.01 is CLIP's logit scale of 100 (ImageBind's text head learns a
scale of the same kind); a smaller T makes scores more decisive. Scores lie in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from shared.events import Modality
from shared.moderation.policy import Policy


@dataclass(frozen=True, slots=True)
class PromptGroups:
    """One modality's prompts of a policy, ready to score: contrast prompts first, then each
    category's, as contiguous row ranges of `matrix` (n_prompts, dim), float32 unit rows."""

    modality: Modality
    categories: tuple[str, ...]
    matrix: np.ndarray
    starts: np.ndarray  # (1 + len(categories),) int64: first row of contrast, then of each category
    counts: np.ndarray  # (1 + len(categories),) float64: rows per group
    temperature: float

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def build_prompt_groups(
    policy: Policy, modality: Modality, embeddings: Mapping[str, np.ndarray]
) -> PromptGroups | None:
    """The prompt groups of `policy` for `modality`, with `embeddings` (prompt text -> unit
    vector). None when no category has prompts for this modality. Raises `KeyError` for a
    prompt missing from `embeddings`."""
    contrast = policy.contrast.for_modality(modality)
    categories = [(name, c.prompts.for_modality(modality)) for name, c in policy.categories.items()]
    categories = [(name, prompts) for name, prompts in categories if prompts]
    if not categories or not contrast:
        return None
    groups: list[Sequence[str]] = [contrast, *(prompts for _, prompts in categories)]
    rows = [np.asarray(embeddings[prompt], dtype=np.float32) for group in groups for prompt in group]
    counts = np.array([len(group) for group in groups], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return PromptGroups(
        modality=modality,
        categories=tuple(name for name, _ in categories),
        matrix=np.ascontiguousarray(np.stack(rows)),
        starts=starts,
        counts=counts.astype(np.float64),
        temperature=policy.scoring.temperature_for(modality),
    )


def zero_shot_scores(groups: PromptGroups, vector: np.ndarray) -> dict[str, float]:
    """Category -> score in [0, 1] for one upload embedding (see the module docstring).

    `vector`: (dim,) float; normalised here, so any length is fine. Raises `ValueError` when
    its dimension is not the prompts'."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != groups.dim:
        raise ValueError(f"upload embedding has {v.shape[0]} dimensions, the prompt embeddings {groups.dim}")
    norm = float(np.linalg.norm(v))
    if norm > 0:
        v = v / norm
    z = (groups.matrix @ v).astype(np.float64) / groups.temperature  # (n_prompts,)
    peaks = np.maximum.reduceat(z, groups.starts)  # (groups,) for a stable log-sum-exp
    sums = np.add.reduceat(np.exp(z - np.repeat(peaks, groups.counts.astype(np.int64))), groups.starts)
    log_mean = peaks + np.log(sums / groups.counts)  # (groups,) L_G
    diff = log_mean[1:] - log_mean[0]  # L_c - L_safe
    scores = 0.5 * (1.0 + np.tanh(0.5 * diff))  # σ(diff) without overflow
    return {name: float(score) for name, score in zip(groups.categories, scores, strict=True)}
