"""Moderation inside the workers: the per-process runtime the tasks use (policies, detectors,
the Redis-backed stores) and the decision the index stage makes with it.

What each worker kind checks and caches at start-up is in `workers.startup`; the
detector/embedding/speech join in `workers.join`.

An upload is decided under its tenant's policy, or the default policy when its tenant has
none (or it has no tenant); the decision names the policy version it was made under.
"""

from __future__ import annotations

from functools import cached_property

import redis
from pydantic import JsonValue

from shared.config import Settings
from shared.events import Moderation
from shared.messages import EmbeddedUpload
from shared.moderation.blocklist import Blocklist, BlocklistCache
from shared.moderation.decision import describe_signal
from shared.moderation.detectors import DetectorSet
from shared.moderation.log import DecisionLog
from shared.moderation.moderator import Moderator, RequestPrompts
from shared.moderation.policy import Policy, load_model_policy
from shared.moderation.prompts import PromptStore
from workers.join_store import DetectorGuard, Join


class ModerationRuntime:
    """One process's moderation pieces (policy loaded and validated on construction).

    `request_prompts` asks a GPU worker to embed a policy's prompts that are not cached yet
    (the worker's Celery app sends the task: `workers.app.OmnibindCelery.request_prompts`);
    without it a missing prompt set is only waited for.
    """

    def __init__(self, settings: Settings, client: redis.Redis, request_prompts: RequestPrompts | None = None) -> None:
        self.settings = settings
        self.redis = client
        self.request_prompts = request_prompts
        # Each resolved for this process's model: thresholds of another model's scores do not hold.
        model = settings.model.name
        self.policy: Policy = load_model_policy(settings.moderation.policy, model)
        self.tenant_policies: dict[str, Policy] = {
            tenant: load_model_policy(path, model) for tenant, path in settings.moderation.tenant_policies.items()
        }
        self._moderators: dict[str, Moderator] = {}

    def policy_for(self, tenant: str | None) -> Policy:
        """`tenant`'s policy, or the default one."""
        return self.tenant_policies.get(tenant, self.policy) if tenant is not None else self.policy

    def policies(self) -> list[Policy]:
        """Every distinct policy in use (the default first)."""
        found = {self.policy.version: self.policy}
        for policy in self.tenant_policies.values():
            found.setdefault(policy.version, policy)
        return list(found.values())

    def moderator_for(self, tenant: str | None) -> Moderator:
        """The moderator of `tenant`'s policy (one per policy, sharing the prompt store and
        blocklist cache)."""
        policy = self.policy_for(tenant)
        if policy.version == self.policy.version:
            return self.moderator
        found = self._moderators.get(policy.version)
        if found is None:
            found = Moderator(policy, self.prompts, self.blocklist, request_prompts=self.request_prompts)
            self._moderators[policy.version] = found
        return found

    @property
    def enabled(self) -> bool:
        return self.settings.moderation.enabled

    @cached_property
    def detectors(self) -> DetectorSet:
        return DetectorSet(self.settings.moderation.detectors if self.enabled else ())

    @cached_property
    def join(self) -> Join:
        return Join(self.redis, self.settings.queue_prefix, ttl_s=self.settings.moderation.join_ttl_s)

    @cached_property
    def guard(self) -> DetectorGuard:
        return DetectorGuard(self.redis, self.settings.queue_prefix, ttl_s=self.settings.redis.delivery_ttl_s)

    @cached_property
    def prompts(self) -> PromptStore:
        return PromptStore(self.redis, self.settings.queue_prefix)

    @cached_property
    def blocklist(self) -> BlocklistCache:
        return BlocklistCache(
            Blocklist(self.redis, self.settings.queue_prefix), refresh_s=self.settings.moderation.blocklist_refresh_s
        )

    @cached_property
    def moderator(self) -> Moderator:
        return Moderator(self.policy, self.prompts, self.blocklist, request_prompts=self.request_prompts)

    @cached_property
    def decisions(self) -> DecisionLog:
        return DecisionLog.from_settings(self.redis, self.settings)


# -- the decision, in the index stage ----------------------------------------------------------


def moderate_embedded(runtime: ModerationRuntime, embedded: EmbeddedUpload) -> Moderation:
    """Decide `embedded` under its tenant's policy (or the default) and log the decision.
    Raises `PromptsUnavailable` (transient) while the prompt embeddings are being computed."""
    decision = runtime.moderator_for(embedded.event.tenant).moderate(
        modality=embedded.modality,
        vector=embedded.vector,
        sha256=embedded.facts.sha256,
        model=embedded.model,
        checkpoint=embedded.checkpoint,
        detectors=embedded.detectors,
        speech=embedded.speech,
        # a video's sound: sound events by the audio prompts, on the audio track's vector
        parts=embedded.parts,
        # a video's sampled frames, each scored: the worst one wins, with its time
        frames=embedded.frame_vectors,
        tenant=embedded.event.tenant,  # its tenant's blocklist (and the operator-wide one)
    )
    runtime.decisions.append(embedded.event.id, decision)
    return decision


def status_summary(decision: Moderation) -> dict[str, JsonValue]:
    """The compact form kept in the status record (``extra.moderation``); the whole decision
    is in the record and the decision log."""
    return {
        "action": decision.action.value,
        "policy_version": decision.policy_version,
        "reasons": [describe_signal(signal) for signal in decision.reasons],
        "notes": list(decision.notes),
    }
