"""Per-tenant moderation policies (``OMNIBIND_MODERATION__TENANT_POLICIES``) in the index
stage's decision, on a real redis-server: an upload is decided under its tenant's policy,
others under the default; a bad tenant policy stops the worker at start-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from producers.client import Client
from producers.moderation import rescore
from shared.config import Settings
from shared.errors import ConfigError
from shared.events import Band, Modality, UploadEvent
from shared.messages import EmbeddedUpload
from shared.moderation.log import DecisionLog
from shared.moderation.prompts import PromptEmbeddings, PromptStore
from shared.redis_client import redis_client
from shared.vectors.records import VectorRecord
from tests.shared.moderation.policies import BASE, write_policy
from workers.moderation import ModerationRuntime, moderate_embedded

CHECKPOINT = "ck-test"
DIM = 32
# acme reviews nothing below 0.99: the same upload the default policy blocks is allowed.
LENIENT = BASE.replace('name = "test"', 'name = "acme-lenient"').replace(
    "review = 0.5\nblock = 0.8", "review = 0.99\nblock = 0.995"
)


def store_prompts(client: redis.Redis, runtime: ModerationRuntime) -> dict[str, np.ndarray]:
    """Prompt embeddings for every policy (one random unit vector per distinct prompt, shared
    by the policies, as one model would embed the same text the same way)."""
    rng = np.random.default_rng(7)
    vectors: dict[str, np.ndarray] = {}
    for policy in runtime.policies():
        prompts = policy.prompt_texts()
        for prompt in prompts:
            if prompt not in vectors:
                raw = rng.standard_normal(DIM)
                vectors[prompt] = (raw / np.linalg.norm(raw)).astype(np.float32)
        matrix = np.stack([vectors[p] for p in prompts])
        PromptStore(client).put(PromptEmbeddings(policy.version, CHECKPOINT, "tiny", tuple(prompts), matrix))
    return vectors


def embedded(tenant: str | None, upload_id: str, vector: np.ndarray) -> EmbeddedUpload:
    event = UploadEvent(id=upload_id, text="x", tenant=tenant)
    return EmbeddedUpload(event=event, modality=Modality.TEXT, vector=vector, model="tiny", checkpoint=CHECKPOINT)


def test_each_upload_is_decided_under_its_tenants_policy_or_the_default(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        moderation={
            "policy": write_policy(tmp_path, BASE, "default.toml"),
            "tenant_policies": {"acme": write_policy(tmp_path, LENIENT, "acme.toml")},
        },
    )
    client = redis_client(redis_url)
    runtime = ModerationRuntime(settings, client)
    assert [p.name for p in runtime.policies()] == ["test", "acme-lenient"]
    vectors = store_prompts(client, runtime)
    # Between a violence prompt and a safe one: violence scores ~0.97 (blocked by default at 0.8).
    blend = 0.55 * vectors["violent text"] + 0.45 * vectors["safe text"]
    violent = blend / np.linalg.norm(blend)

    for_acme = moderate_embedded(runtime, embedded("acme", "acme:u1", violent))
    for_beta = moderate_embedded(runtime, embedded("beta", "beta:u1", violent))
    for_none = moderate_embedded(runtime, embedded(None, "u1", violent))

    assert for_acme.policy_version == runtime.tenant_policies["acme"].version != runtime.policy.version
    assert for_beta.policy_version == for_none.policy_version == runtime.policy.version
    assert for_beta.action is Band.BLOCK and for_beta.flagged
    assert for_acme.action is Band.ALLOW and not for_acme.flagged, "acme's lenient thresholds apply to acme only"
    logged = {e.upload_id: e.decision.policy_version for e in DecisionLog(client).newest(limit=10)}
    assert logged["acme:u1"] == runtime.tenant_policies["acme"].version


def test_a_bad_tenant_policy_stops_the_worker_at_start_up(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    broken = write_policy(tmp_path, BASE.replace("review = 0.5", "review = 'high'"), "broken.toml")
    settings = make_settings(redis_url=redis_url, moderation={"tenant_policies": {"acme": broken}})
    with pytest.raises(ConfigError):
        ModerationRuntime(settings, redis_client(redis_url))


def test_rescore_keeps_to_one_tenant_under_its_policy_and_by_default_skips_tenants_with_their_own(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        vectors={"dimension": DIM},
        moderation={
            "policy": write_policy(tmp_path, BASE, "default.toml"),
            "tenant_policies": {"acme": write_policy(tmp_path, LENIENT, "acme.toml")},
        },
    )
    runtime = ModerationRuntime(settings, redis_client(redis_url))
    vectors = store_prompts(runtime.redis, runtime)
    blend = 0.55 * vectors["violent text"] + 0.45 * vectors["safe text"]
    with Client(settings, source="test") as client:
        client.vectors.upsert(
            [
                VectorRecord(
                    upload_id=f"{tenant}:u1",
                    vector=blend / np.linalg.norm(blend),
                    modality=Modality.TEXT,
                    tenant=tenant,
                    model="tiny",
                    checkpoint=CHECKPOINT,
                )
                for tenant in ("acme", "beta")
            ]
        )

        def versions() -> dict[str, str | None]:
            return {t: client.vectors.get(f"{t}:u1").moderation.policy_version for t in ("acme", "beta")}  # type: ignore[union-attr]

        everyone_else = rescore(client, runtime.policy, skip_tenants=frozenset({"acme"}))
        assert everyone_else.records == 1 and everyone_else.flagged_after == 1
        assert versions() == {"acme": None, "beta": runtime.policy.version}, "acme has a policy of its own"

        acme_only = rescore(client, runtime.tenant_policies["acme"], tenant="acme")
        assert acme_only.records == 1 and acme_only.flagged_after == 0
        assert versions() == {"acme": runtime.tenant_policies["acme"].version, "beta": runtime.policy.version}
