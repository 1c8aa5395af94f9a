"""Per-tenant daily quotas: the gate on a real redis-server, the HTTP API's 429 with
Retry-After, and the bridge, where a tenant over quota waits on its own stream while the
others go on."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
import redis

from producers.bridge.service import build_consumers, raw_redis
from producers.bridge.stream_consumer import IngestStreamConsumer
from producers.client import Client
from shared.api_keys import ApiKeyStore, Role
from shared.config import QuotaSettings, Settings
from shared.events import UploadStatus
from shared.quotas import QuotaExceeded, QuotaGate, seconds_to_next_day
from shared.vectors.records import tenants
from tests.http.conftest import RunningApi

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_the_gate_counts_per_tenant_and_day_refunds_and_says_when_the_day_resets(redis_conn: redis.Redis) -> None:
    quotas = QuotaSettings(uploads_per_day=2, bytes_per_day=100, tenants={"big": {"uploads_per_day": 0}})
    gate = QuotaGate(redis_conn, "omnibind", quotas)

    first = gate.reserve("acme", 40, now=NOON)
    gate.reserve("acme", 40, now=NOON)
    with pytest.raises(QuotaExceeded) as refused:
        gate.reserve("acme", 1, now=NOON)
    assert refused.value.reason == "quota_exceeded" and refused.value.retry_after_s == 12 * 3600
    assert "2 uploads" in refused.value.message
    gate.refund(first)
    with pytest.raises(QuotaExceeded, match="100 bytes"):
        gate.reserve("acme", 61, now=NOON)  # an upload is free again, but 40 + 61 bytes are not
    assert gate.reserve("acme", 60, now=NOON) is not None
    assert gate.usage("acme", now=NOON) == (2, 100)

    assert gate.reserve("acme", 10, now=datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC)) is not None, "a new day"
    assert gate.reserve("beta", 10, now=NOON) is not None, "each tenant has its own count"
    assert gate.reserve(None, 10**9, now=NOON) is None, "no tenant: no quota"
    with pytest.raises(QuotaExceeded):
        gate.reserve("big", 101, now=NOON)  # its override lifts the upload count, not the bytes
    assert seconds_to_next_day(datetime(2026, 12, 5, 23, 59, 59, 500000, tzinfo=UTC)) == 1


def test_an_upload_past_the_quota_answers_429_with_retry_after_and_the_other_tenant_goes_on(
    start_api: Callable[..., RunningApi],
) -> None:
    api = start_api(quotas={"uploads_per_day": 100, "tenants": {"acme": {"uploads_per_day": 2}}})
    store = ApiKeyStore(api.client.redis, api.settings.queue_prefix)
    roles = frozenset({Role.INGEST, Role.READ})
    acme, beta = store.create(tenants("acme"), roles)[1], store.create(tenants("beta"), roles)[1]

    def send(http: httpx.Client, upload_id: str) -> httpx.Response:
        return http.post("/v1/uploads", files={"file": ("a.png", PNG)}, data={"id": upload_id})

    with api.http(key=acme) as http:
        assert send(http, "a1").status_code == 202
        assert send(http, "a1").status_code == 200, "a repeat of a run in flight"
        assert send(http, "a2").status_code == 202, "...did not use up the quota"
        refused = send(http, "a3")
        text = http.post("/v1/uploads", json={"id": "a4", "text": "hello"})
    assert refused.status_code == text.status_code == 429
    assert refused.json()["reason"] == "quota_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert api.client.status("acme:a3") is None and api.client.status("acme:a4") is None
    assert list(api.client.objects.list_refs(api.settings.objects.bucket, "acme:a3")) == [], "nothing stored"
    with api.http(key=beta) as http:
        assert send(http, "b1").status_code == 202


def test_on_the_bridge_a_tenant_over_quota_waits_on_its_stream_and_the_others_go_on(
    make_settings: Callable[..., Settings], redis_url: str, redis_conn: redis.Redis
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        bridge={"block_s": 0.2, "tenant_streams": ["acme", "beta"]},
        quotas={"uploads_per_day": 1},
    )
    for tenant in ("acme", "beta"):
        for n in range(2):
            redis_conn.xadd(f"omnibind:ingest:{tenant}", {"event": json.dumps({"id": f"e{n}", "text": "x"})})
    with Client(settings, source="test") as client:
        consumers = {
            c.name: c for c in build_consumers(settings, client, raw_redis(settings), stream=True, minio=False)
        }
        acme = consumers["ingest-stream:acme"]
        assert isinstance(acme, IngestStreamConsumer)
        acme.start()
        with pytest.raises(QuotaExceeded):
            acme.poll()  # the runner backs off and polls again later: nothing is lost
        assert client.status("acme:e0") is not None and client.status("acme:e1") is None
        pending: dict[str, int] = redis_conn.xpending("omnibind:ingest:acme", "omnibind-bridge")  # type: ignore[assignment]
        assert pending["pending"] == 1, "the entry over quota stays pending for the next day"
        beta = consumers["ingest-stream:beta"]
        beta.start()
        with pytest.raises(QuotaExceeded):
            beta.poll()
        assert client.status("beta:e0") is not None, "beta's quota is its own"


def test_a_tenant_with_its_limit_of_unfinished_uploads_waits_and_the_others_do_not(
    start_api: Callable[..., RunningApi],
) -> None:
    api = start_api(backpressure={"max_inflight_per_tenant": 2, "retry_after_s": 3})
    store = ApiKeyStore(api.client.redis, api.settings.queue_prefix)
    roles = frozenset({Role.INGEST, Role.READ})
    acme, beta = store.create(tenants("acme"), roles)[1], store.create(tenants("beta"), roles)[1]

    with api.http(key=acme) as http:
        assert [http.post("/v1/uploads", json={"id": f"a{n}", "text": "x"}).status_code for n in range(2)] == [202] * 2
        refused = http.post("/v1/uploads", json={"id": "a2", "text": "x"})
        assert refused.status_code == 429 and refused.json()["reason"] == "tenant_busy"
        assert refused.headers["retry-after"] == "3"
        with api.http(key=beta) as other:
            assert other.post("/v1/uploads", json={"id": "b0", "text": "x"}).status_code == 202, "beta has its own"
        # One of acme's uploads finishes (a worker would mark it indexed): acme may send again.
        assert api.client.statuses.advance("acme:a0", UploadStatus.INDEXED)
        assert http.post("/v1/uploads", json={"id": "a2", "text": "x"}).status_code == 202
        assert http.post("/v1/uploads", json={"id": "a3", "text": "x"}).status_code == 429
