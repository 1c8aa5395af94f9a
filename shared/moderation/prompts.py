"""Prompt embeddings, computed once per (policy version, checkpoint) by a GPU worker and
cached in Redis (``{prefix}:moderation:prompts:{version}:{checkpoint}``, JSON).

The GPU worker stores them for its configured policy at start-up, before it consumes
anything, and on request (task ``omnibind.embed_prompts``) for any other policy — e.g. when
an index worker or ``omnibind rescore`` meets a policy version the GPU workers were not
started with. Whatever the vector dimension (1024 huge, 32 tiny), the format is the same.
"""

from __future__ import annotations

from typing import Any

import redis

from shared.moderation.prompt_embeddings import (
    PROMPTS_FORMAT_VERSION,
    PromptEmbeddings,
    PromptRequest,
    PromptsUnavailable,
)
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

# The pure types live in prompt_embeddings (the moderation core uses them without Redis);
# importing them from here keeps working.
__all__ = [
    "DEFAULT_TTL_S",
    "PROMPTS_FORMAT_VERSION",
    "REQUEST_MARKER_TTL_S",
    "PromptEmbeddings",
    "PromptRequest",
    "PromptStore",
    "PromptsUnavailable",
]

DEFAULT_TTL_S = 30 * 86400  # refreshed by every GPU worker start
REQUEST_MARKER_TTL_S = 30  # at most one request per (policy, checkpoint) in this window


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
