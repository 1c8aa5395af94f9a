"""Prompt embeddings, computed once per (policy version, checkpoint) by a GPU worker and
cached in Redis (``{prefix}:moderation:prompts:{version}:{checkpoint}``, JSON).

The GPU worker stores them for its configured policy at start-up, before it consumes
anything, and on request (task ``omnibind.embed_prompts``) for any other policy — e.g. when
an index worker or ``omnibind rescore`` meets a policy version the GPU workers were not
started with. Whatever the vector dimension (1024 huge, 32 tiny), the format is the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from shared.errors import TransientError
from shared.moderation.vectors import decode_vectors, encode_vectors
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

PROMPTS_FORMAT_VERSION = 1
DEFAULT_TTL_S = 30 * 86400  # refreshed by every GPU worker start
REQUEST_MARKER_TTL_S = 30  # at most one request per (policy, checkpoint) in this window


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


class PromptStore:
    """Reads and writes cached prompt embeddings in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, ttl_s: int = DEFAULT_TTL_S) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self.ttl_s = ttl_s

    def get(self, policy_version: str, checkpoint: str) -> PromptEmbeddings | None:
        with translate_redis_errors("reading prompt embeddings"):
            raw: Any = self._redis.get(self.keys.prompts(policy_version, checkpoint))
        if raw is None:
            return None
        try:
            return PromptEmbeddings.from_json(raw)
        except (ValueError, KeyError, TypeError):
            return None  # unreadable (an older format): treated as missing, recomputed on request

    def put(self, embeddings: PromptEmbeddings) -> None:
        with translate_redis_errors("storing prompt embeddings"):
            self._redis.set(
                self.keys.prompts(embeddings.policy_version, embeddings.checkpoint),
                embeddings.to_json(),
                ex=self.ttl_s,
            )

    def touch(self, policy_version: str, checkpoint: str) -> bool:
        """Restart the TTL of cached embeddings (every GPU worker start); False if absent."""
        with translate_redis_errors("refreshing prompt embeddings"):
            return bool(self._redis.expire(self.keys.prompts(policy_version, checkpoint), self.ttl_s))

    def claim_request(self, policy_version: str, checkpoint: str) -> bool:
        """True for the first caller in `REQUEST_MARKER_TTL_S` seconds: that caller sends the
        request to the GPU queue, the others just wait for the result to appear."""
        with translate_redis_errors("marking a prompt embedding request"):
            return bool(
                self._redis.set(
                    self.keys.prompts_requested(policy_version, checkpoint), "1", nx=True, ex=REQUEST_MARKER_TTL_S
                )
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
