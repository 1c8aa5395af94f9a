"""Moderation inside the workers: what each worker kind loads at start-up, and the
per-process runtime the tasks use.

- every worker kind (moderation enabled) validates the policy, and every tenant's policy
  (``OMNIBIND_MODERATION__TENANT_POLICIES``), before consuming: a malformed policy stops the
  worker at start-up with a message naming the field (exit code 3);
- cpu workers check that the enabled detectors' packages are installed (loaded lazily, per
  child process, on first use);
- gpu workers embed the prompts of every policy once the model is loaded and store them in
  Redis for (policy version, checkpoint), so index workers find them before the first upload.

An upload is decided under its tenant's policy, or the default policy when its tenant has
none (or it has no tenant); the decision names the policy version it was made under.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import uuid
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import msgpack
import numpy as np
import redis
from pydantic import JsonValue

from shared.config import Settings
from shared.errors import ConfigError, OmnibindError
from shared.events import Modality, Moderation
from shared.messages import EmbeddedUpload, PreparedUpload, SpeechPart, SpeechRequest
from shared.moderation.blocklist import Blocklist, BlocklistCache
from shared.moderation.decision import describe_signal
from shared.moderation.detectors import DecodedMedia, DetectorResult, DetectorSet
from shared.moderation.join import DETECTORS_PART, EMBEDDED_PART, SPEECH_PART, DetectorGuard, Join
from shared.moderation.log import DecisionLog
from shared.moderation.moderator import Moderator
from shared.moderation.policy import Policy, load_policy
from shared.moderation.prompts import PromptEmbeddings, PromptRequest, PromptStore
from shared.queue import QueueName, TaskName

if TYPE_CHECKING:
    from celery import Celery

    from workers.gpu import GpuRunner

log = logging.getLogger(__name__)

EXIT_CONFIG = 3


class ModerationRuntime:
    """One process's moderation pieces (policy loaded and validated on construction)."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.policy: Policy = load_policy(settings.moderation.policy)
        self.tenant_policies: dict[str, Policy] = {
            tenant: load_policy(path) for tenant, path in settings.moderation.tenant_policies.items()
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
            found = Moderator(policy, self.prompts, self.blocklist, request_prompts=send_prompt_request)
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
        return Moderator(self.policy, self.prompts, self.blocklist, request_prompts=send_prompt_request)

    @cached_property
    def decisions(self) -> DecisionLog:
        return DecisionLog.from_settings(self.redis, self.settings)


def send_prompt_request(request: PromptRequest) -> None:
    from workers.app import app  # the worker's own app; imported late (app imports resources)

    app.send_task(TaskName.EMBED_PROMPTS, args=[request.to_wire()], queue=QueueName.GPU, ignore_result=True)


def embed_prompts(runner: GpuRunner, prompts: Sequence[str], *, timeout_s: float) -> np.ndarray:
    """Unit text embeddings (len(prompts), dim) of `prompts`, batched like any text upload."""
    tokens = np.stack([runner.preprocessor.text(prompt) for prompt in prompts])  # the model's own tokens
    from workers.gpu import EmbedItem

    futures = [runner.batcher.submit(EmbedItem(Modality.TEXT, row)) for row in tokens]
    return np.stack([np.asarray(f.result(timeout=timeout_s), dtype=np.float32) for f in futures])


def store_prompt_embeddings(
    runner: GpuRunner, store: PromptStore, request: PromptRequest, *, timeout_s: float
) -> PromptEmbeddings:
    """Embed `request`'s prompts with `runner`'s model and cache them in Redis."""
    matrix = embed_prompts(runner, request.prompts, timeout_s=timeout_s)
    embeddings = PromptEmbeddings(
        policy_version=request.policy_version,
        checkpoint=runner.checkpoint,
        model=runner.model_name,
        prompts=request.prompts,
        matrix=matrix,
    )
    store.put(embeddings)
    return embeddings


def prepare_worker(app: Celery, kind: str | None) -> None:
    """Start-up of a worker process (Celery ``worker_init``): fail fast on a bad policy or a
    missing detector package; on a GPU worker, cache the policy's prompt embeddings."""
    resources = app.resources  # type: ignore[attr-defined]
    settings: Settings = resources.settings
    if not settings.moderation.enabled:
        return
    try:
        runtime: ModerationRuntime = resources.moderation
        if kind in (None, "cpu", "speech"):  # speech workers run text detectors on transcripts
            _ = runtime.detectors  # checks the packages are installed (without importing them)
    except ConfigError as exc:
        log.critical("cannot start: %s", exc)
        raise SystemExit(EXIT_CONFIG) from exc
    log.info("moderation policy %r version %s", runtime.policy.name, runtime.policy.version)
    for tenant, policy in runtime.tenant_policies.items():
        log.info("moderation policy of tenant %s: %r version %s", tenant, policy.name, policy.version)
    if kind == "gpu":
        for policy in runtime.policies():
            _cache_prompts_at_start(resources.gpu, runtime, policy, settings)


def _cache_prompts_at_start(runner: GpuRunner, runtime: ModerationRuntime, policy: Policy, settings: Settings) -> None:
    prompts = policy.prompt_texts()
    if not prompts:
        return
    try:
        cached = runtime.prompts.get(policy.version, runner.checkpoint)
        if cached is not None and set(prompts) <= set(cached.prompts):
            runtime.prompts.touch(policy.version, runner.checkpoint)
        else:
            request = PromptRequest(policy.version, tuple(prompts))
            store_prompt_embeddings(runner, runtime.prompts, request, timeout_s=settings.worker.task_time_limit_s)
        log.info("prompt embeddings of policy %s cached (%d prompts)", policy.version, len(prompts))
    except OmnibindError as exc:
        # Redis down at start-up: index workers will ask for the prompts when they need them.
        log.warning("could not cache the prompt embeddings at start-up: %s", exc)


# -- the detector/embedding join ---------------------------------------------------------------


def new_join_token() -> str:
    return uuid.uuid4().hex


def open_join(runtime: ModerationRuntime, prepared: PreparedUpload) -> None:
    """Record which parts `prepared`'s join waits for, before any of them can arrive."""
    assert prepared.join_token is not None
    runtime.join.open(prepared.event.id, prepared.join_token, prepared.join_parts)


def detect_and_join(runtime: ModerationRuntime, prepared: PreparedUpload, media: DecodedMedia) -> EmbeddedUpload | None:
    """Run the enabled detectors on `media` and store their results as this upload's
    detectors part; returns the embedded upload with the results attached when the
    embedding was there already (the caller hands it to the index stage), else None (the
    GPU side will)."""
    assert prepared.join_token is not None
    upload_id = prepared.event.id
    crashed = runtime.guard.begin(upload_id)
    max_crashes = runtime.settings.moderation.detector_max_crashes
    if crashed >= max_crashes:
        note = f"skipped: the worker crashed {crashed} times while running detectors on this upload"
        results = tuple(DetectorResult(name, error=note) for name in runtime.detectors.for_modality(media.modality))
    else:
        results = runtime.detectors.run(media)
    runtime.guard.end(upload_id)
    payload = json.dumps([result.to_wire() for result in results])
    parts = runtime.join.put(upload_id, prepared.join_token, DETECTORS_PART, payload, prepared.join_parts)
    return _combine(parts) if parts is not None else None


def embed_and_join(runtime: ModerationRuntime, embedded: EmbeddedUpload) -> EmbeddedUpload | None:
    """Store `embedded` as its upload's embedding part; returns it with the detector results
    attached when they were there already, else None (the CPU side will hand it on)."""
    assert embedded.join_token is not None
    payload = base64.b64encode(msgpack.packb(embedded.to_wire(), use_bin_type=True)).decode("ascii")
    parts = runtime.join.put(embedded.event.id, embedded.join_token, EMBEDDED_PART, payload, embedded.join_parts)
    return _combine(parts) if parts is not None else None


def speech_and_join(runtime: ModerationRuntime, request: SpeechRequest, part: SpeechPart) -> EmbeddedUpload | None:
    """Store `part` as its upload's speech part; returns the embedded upload with everything
    attached when the other parts were there already, else None (their side hands it on)."""
    payload = base64.b64encode(msgpack.packb(part.to_wire(), use_bin_type=True)).decode("ascii")
    parts = runtime.join.put(request.event.id, request.join_token, SPEECH_PART, payload, request.join_parts)
    return _combine(parts) if parts is not None else None


def _combine(parts: dict[str, str]) -> EmbeddedUpload:
    embedded = EmbeddedUpload.from_wire(msgpack.unpackb(base64.b64decode(parts[EMBEDDED_PART]), raw=False))
    detectors = tuple(DetectorResult.from_wire(doc) for doc in json.loads(parts.get(DETECTORS_PART) or "[]"))
    speech = None
    if SPEECH_PART in parts:
        speech = SpeechPart.from_wire(msgpack.unpackb(base64.b64decode(parts[SPEECH_PART]), raw=False))
    return dataclasses.replace(embedded, detectors=detectors, speech=speech)


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
