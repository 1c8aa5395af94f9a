"""`omnibind tenant purge`: two tenants on a real redis-server, the local object store and
LanceDB; one is purged (once killed midway by SIGKILL and run again), the other keeps
everything it had."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from producers.client import Client
from producers.purge import PHASES, PurgeRunning, TenantPurge, read_progress
from shared.audit import Action, AuditLog
from shared.config import FairnessSettings, QuotaSettings, Settings
from shared.events import DeleteRequest, Modality, Moderation, UploadEvent
from shared.fair_queue import FairQueue
from shared.moderation.log import DecisionLog
from shared.quotas import QuotaGate
from shared.redis_keys import RedisKeys
from shared.streams import DeadLetterStream
from shared.tenant_inflight import TenantInflight
from shared.vectors.records import SearchFilters, VectorRecord, tenants

ROOT = Path(__file__).resolve().parents[2]
PER_TENANT = 12
DIM = 8


@dataclass
class Seeded:
    client: Client
    settings: Settings
    ids: dict[str, list[str]]


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def seed_tenant(client: Client, tenant: str, *, legacy: bool = False) -> list[str]:
    """Uploads of `tenant` everywhere omnibind keeps something of them; with `legacy`, one
    more whose id is outside its namespace (the Python client submits ids unqualified)."""
    bucket = client.settings.objects.bucket
    ids = [f"{tenant}:u{n}" for n in range(PER_TENANT)] + ([f"legacy-{tenant}"] if legacy else [])
    dead = DeadLetterStream(client.redis)
    decisions = DecisionLog(client.redis)
    records = []
    for n, upload_id in enumerate(ids):
        ref = client.objects.put(bucket, f"{upload_id}/file.txt", f"{tenant} file {n}".encode())
        event = UploadEvent(id=upload_id, object=ref, tenant=tenant, source="test")
        assert client.statuses.create(event)
        records.append(
            VectorRecord(
                upload_id=upload_id,
                vector=unit(hash(upload_id) % 10_000),
                modality=Modality.TEXT,
                object=ref,
                tenant=tenant,
            )
        )
        decisions.append(upload_id, Moderation())
        client.redis.xadd("omnibind:results", {"upload_id": upload_id, "result": "{}"})
        client.redis.xadd("omnibind:webhooks:deliveries", {"upload_id": upload_id, "outcome": "delivered"})
        if n % 3 == 0:
            dead.dead_letter(event.model_dump_json(), "preprocess", "X", "x", "failed", 1)
    # A letter without an upload id whose event names the tenant (refused at the bridge).
    dead.dead_letter(
        json.dumps({"text": "x", "tenant": tenant}), "ingest", "X", "invalid_event", "bad", 1, upload_id=""
    )
    client.objects.put(bucket, f"{tenant}:orphan/file.txt", b"an object whose record expired")
    client.vectors.upsert(records)
    seed_bookkeeping(client, tenant, ids)
    return ids


def seed_bookkeeping(client: Client, tenant: str, ids: list[str]) -> None:
    """What the pipeline keeps of a tenant besides records: a pending deletion of each of its
    first 3 uploads (with delivery counters), a moderation join hash of each, its quota
    counters and its unfinished-uploads set."""
    keys = RedisKeys(client.settings.queue_prefix)
    for upload_id in ids[:3]:
        client.deletions.record(DeleteRequest(upload_id=upload_id, reason="test"))
    for token in client.redis.hkeys(keys.deletions):
        client.redis.hset(keys.deletion_deliveries(token), "0", 1)
    for n, upload_id in enumerate(ids):
        client.redis.hset(keys.join(upload_id, f"tok{n}"), "_expected", "embedded")
    QuotaGate(client.redis, client.settings.queue_prefix, QuotaSettings(uploads_per_day=1000)).reserve(tenant, 10)
    TenantInflight(client.redis, client.settings.queue_prefix, 5, 1).started(tenant, ids[0], 1)
    FairQueue(client.redis, client.settings.queue_prefix, FairnessSettings()).push(
        UploadEvent(id=ids[1], text="waiting for its turn", tenant=tenant)
    )


def bookkeeping_left(client: Client, tenant: str, ids: set[str]) -> dict[str, int]:
    keys = RedisKeys(client.settings.queue_prefix)
    pending: Any = client.redis.hgetall(keys.deletions)
    # Tokens are hashes of the request: the tenant's are those whose request names its upload.
    all_tokens: Any = client.redis.zrange(keys.deletions_inflight, 0, -1)
    tokens = {token for token, doc in pending.items() if DeleteRequest.model_validate_json(doc).upload_id in ids}
    beside = {token for token in all_tokens if token not in pending}  # left without their request
    return {
        "pending_deletions": len(tokens),
        "deletion_tokens": len(tokens & set(all_tokens)) + len(beside),
        "deliveries": sum(bool(client.redis.exists(keys.deletion_deliveries(t))) for t in tokens | beside),
        "joins": sum(
            key.split(":moderation:join:")[1].rpartition(":")[0] in ids
            for key in client.redis.scan_iter(match=keys.join("*", "*"))
        ),
        "quotas": len(list(client.redis.scan_iter(match=keys.quota(tenant, "*"))))
        + int(client.redis.exists(keys.tenant_inflight(tenant)))
        + int(client.redis.exists(keys.fair_queue(tenant)))
        + sum(owner == tenant for owner in client.redis.hvals(keys.fair_waiting)),
    }


@pytest.fixture
def seeded(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Seeded]:
    settings = make_settings(redis_url=redis_url, vectors={"dimension": DIM})
    with Client(settings, source="test") as client:
        ids = {"acme": seed_tenant(client, "acme", legacy=True), "beta": seed_tenant(client, "beta")}
        yield Seeded(client, settings, ids)


def stream_ids(conn: redis.Redis, key: str) -> list[str]:
    entries: Any = conn.xrange(key)
    return [fields["upload_id"] for _id, fields in entries]


def what_is_left(seeded: Seeded, tenant: str) -> dict[str, int]:
    client, conn = seeded.client, seeded.client.redis
    mine = set(seeded.ids[tenant])
    dead = DeadLetterStream(conn).entries(1000)
    return {
        "statuses": sum(client.status(upload_id) is not None for upload_id in mine),
        "vectors": client.vectors.count(SearchFilters(scope=tenants(tenant))),
        "objects": len(list(client.objects.list_refs(client.settings.objects.bucket, f"{tenant}:")))
        + sum(1 for ref in client.objects.list_refs(client.settings.objects.bucket, "legacy-") if tenant in ref.key),
        "dead_letters": sum(d.upload_id in mine or f'"tenant":"{tenant}"' in d.event.replace(" ", "") for d in dead),
        "decisions": sum(upload_id in mine for upload_id in stream_ids(conn, "omnibind:decisions")),
        "results": sum(upload_id in mine for upload_id in stream_ids(conn, "omnibind:results")),
        "webhook_deliveries": sum(upload_id in mine for upload_id in stream_ids(conn, "omnibind:webhooks:deliveries")),
        **bookkeeping_left(client, tenant, mine),
        "decision_indexes": sum(bool(conn.exists(f"omnibind:decisions:upload:{upload_id}")) for upload_id in mine),
    }


BEFORE = {
    "statuses": PER_TENANT,
    "vectors": PER_TENANT,
    "objects": PER_TENANT + 1,
    "dead_letters": PER_TENANT // 3 + 1,
    "decisions": PER_TENANT,
    "results": PER_TENANT,
    "webhook_deliveries": PER_TENANT,
    "pending_deletions": 3,
    "deletion_tokens": 3,
    "deliveries": 3,
    "joins": PER_TENANT,
    "quotas": 4,
    "decision_indexes": PER_TENANT,
}
GONE = dict.fromkeys(BEFORE, 0)


def test_a_purge_removes_one_tenant_everywhere_and_leaves_the_other_untouched(seeded: Seeded) -> None:
    beta_before = what_is_left(seeded, "beta")
    assert beta_before == BEFORE
    assert what_is_left(seeded, "acme") == {k: v + (0 if k == "objects" else 1) for k, v in BEFORE.items()} | {
        "objects": PER_TENANT + 2,
        "dead_letters": PER_TENANT // 3 + 2,
        "pending_deletions": 3,
        "deletion_tokens": 3,
        "deliveries": 3,
        "quotas": 4,
    }
    counts_before = seeded.client.statuses.counts()

    final = TenantPurge(seeded.client, "acme", actor="cli:test", batch_size=5).run()

    assert what_is_left(seeded, "acme") == GONE
    assert what_is_left(seeded, "beta") == beta_before, "the other tenant keeps everything"
    assert final.state == "done" and final.counts == {
        "statuses": PER_TENANT + 1,
        "vectors": PER_TENANT + 1,
        "objects": PER_TENANT + 2,
        "dead_letters": PER_TENANT // 3 + 2,
        "decisions": PER_TENANT + 1,
        "results": PER_TENANT + 1,
        "webhook_deliveries": PER_TENANT + 1,
        "pending_deletions": 3,
        "joins": PER_TENANT + 1,
        "quotas": 3,  # its waiting upload, quota counter and unfinished set
    }
    assert sum(seeded.client.statuses.counts().values()) == sum(counts_before.values()) - (PER_TENANT + 1)
    assert seeded.client.redis.zcard("omnibind:recent") == PER_TENANT, "only beta's uploads are listed"

    again = TenantPurge(seeded.client, "acme", actor="cli:test").run()
    assert again.state == "done" and again.total == 0, "a second purge finds nothing left"
    actions = [(e.action, e.tenant, e.actor) for e in AuditLog(seeded.client.redis).newest()]
    assert actions[:2] == [
        (Action.TENANT_PURGE_DONE, "acme", "cli:test"),
        (Action.TENANT_PURGE_START, "acme", "cli:test"),
    ]
    assert AuditLog(seeded.client.redis).newest(action="tenant.purge.done")[-1].detail["total"] == final.total


def test_a_purge_killed_midway_continues_where_it_stopped_when_run_again(seeded: Seeded, tmp_path: Path) -> None:
    beta_before = what_is_left(seeded, "beta")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
    env |= {
        "OMNIBIND_REDIS_URL": seeded.settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        "OMNIBIND_DATA_DIR": str(seeded.settings.data_dir),
        "OMNIBIND_VECTORS__DIMENSION": str(DIM),
    }
    purge = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "tenant", "purge", "acme", "--yes", "--batch-size", "1"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert purge.stderr is not None
    for line in purge.stderr:  # one line per batch, printed after the batch was recorded
        purged = re.search(r"statuses (\d+),", line)
        if purged and int(purged.group(1)) >= 3:
            purge.send_signal(signal.SIGKILL)
            break
    assert purge.wait(timeout=60) == -signal.SIGKILL
    stopped = read_progress(seeded.client, "acme")
    assert stopped is not None and stopped.state == "running" and stopped.phase == PHASES[0]
    assert 0 < stopped.counts["statuses"] < PER_TENANT + 1, "killed midway through the status records"

    with pytest.raises(PurgeRunning):  # its lock outlives it for LOCK_TTL_S...
        TenantPurge(seeded.client, "acme", actor="cli:test").run()
    seeded.client.redis.delete("omnibind:purge:acme:lock")  # ...and lapses then: skip the wait

    final = TenantPurge(seeded.client, "acme", actor="cli:test", batch_size=4).run()

    assert final.state == "done" and final.runs == 2
    assert final.counts["statuses"] == PER_TENANT + 1, "every record counted once across both runs"
    assert what_is_left(seeded, "acme") == GONE
    assert what_is_left(seeded, "beta") == beta_before
