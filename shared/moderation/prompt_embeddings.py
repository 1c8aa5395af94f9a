"""What the moderation core knows of prompt embeddings, without the Redis store that caches
them (shared.moderation.prompts): the embeddings of a policy's prompts, the request for them,
and the error while they are missing. Pure: no I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.errors import TransientError
from shared.moderation.vectors import decode_vectors, encode_vectors

PROMPTS_FORMAT_VERSION = 1


class PromptsUnavailable(TransientError):
    """The prompt embeddings of a policy are not in Redis yet (a GPU worker was asked)."""

    reason = "prompt_embeddings_unavailable"


@dataclass(frozen=True, slots=True)
class PromptEmbeddings:
    """Unit text embeddings of a policy's prompts: row i of `matrix` embeds `prompts[i]`."""

    policy_version: str
    checkpoint: str
    model: str
    prompts: tuple[str, ...]
    matrix: np.ndarray  # (len(prompts), dim) float32

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.prompts):
            raise ValueError(f"matrix {self.matrix.shape} does not hold one row per prompt ({len(self.prompts)})")

    def by_prompt(self) -> dict[str, np.ndarray]:
        return {prompt: self.matrix[i] for i, prompt in enumerate(self.prompts)}

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": PROMPTS_FORMAT_VERSION,
                "policy_version": self.policy_version,
                "checkpoint": self.checkpoint,
                "model": self.model,
                "prompts": list(self.prompts),
                "dim": int(self.matrix.shape[1]),
                "vectors": encode_vectors(self.matrix),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> PromptEmbeddings:
        doc: dict[str, Any] = json.loads(text)
        if doc.get("v") != PROMPTS_FORMAT_VERSION:
            raise ValueError(f"prompt embeddings format {doc.get('v')!r} is not {PROMPTS_FORMAT_VERSION}")
        return cls(
            policy_version=str(doc["policy_version"]),
            checkpoint=str(doc["checkpoint"]),
            model=str(doc["model"]),
            prompts=tuple(doc["prompts"]),
            matrix=decode_vectors(doc["vectors"], int(doc["dim"])),
        )


@dataclass(frozen=True, slots=True)
class PromptRequest:
    """Payload of the ``omnibind.embed_prompts`` task: embed these prompts for this policy."""

    policy_version: str
    prompts: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"v": PROMPTS_FORMAT_VERSION, "policy_version": self.policy_version, "prompts": list(self.prompts)}

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> PromptRequest:
        if doc.get("v") != PROMPTS_FORMAT_VERSION:
            raise ValueError(f"prompt request version {doc.get('v')!r} is not {PROMPTS_FORMAT_VERSION}")
        prompts: Sequence[str] = doc["prompts"]
        if not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise ValueError("a prompt request needs non-empty prompt strings")
        return cls(policy_version=str(doc["policy_version"]), prompts=tuple(prompts))
