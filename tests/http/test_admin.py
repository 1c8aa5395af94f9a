"""Admin routes over real HTTP (real redis-server, local object store, no workers): purging a
tenant takes an admin key covering it, removes that tenant's uploads and leaves the other's;
the audit log names the key that did it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from shared.api_keys import ApiKeyStore, Role
from shared.vectors.records import ALL_TENANTS, tenants
from tests.http.conftest import RunningApi
from tests.support.waiting import wait_until

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
USER = frozenset({Role.INGEST, Role.READ})
DEADLINE_S = 60.0


def upload(http: httpx.Client, upload_id: str) -> None:
    reply = http.post("/v1/uploads", files={"file": ("a.png", PNG)}, data={"id": upload_id})
    assert reply.status_code == 202, reply.text


def wait_done(http: httpx.Client, tenant: str) -> dict[str, Any]:
    last: list[httpx.Response] = []

    def done() -> bool:
        last[:] = [http.get(f"/v1/admin/tenants/{tenant}/purge")]
        return last[0].status_code == 200 and last[0].json()["state"] == "done"

    wait_until(done, timeout_s=DEADLINE_S, what=lambda: f"the purge to be done: {last[0].text}", poll_s=0.1)
    return dict(last[0].json())


def test_an_admin_purges_its_tenant_over_http_and_the_audit_log_names_its_key(
    start_api: Callable[..., RunningApi],
) -> None:
    api = start_api()
    store = ApiKeyStore(api.client.redis, api.settings.queue_prefix)
    acme_user = store.create(tenants("acme"), USER)[1]
    beta_user = store.create(tenants("beta"), USER)[1]
    acme_admin_stored, acme_admin = store.create(tenants("acme"), frozenset({Role.ADMIN}))
    operator = store.create(ALL_TENANTS, frozenset({Role.ADMIN}))[1]
    for key, ids in ((acme_user, ["a1", "a2", "a3"]), (beta_user, ["b1", "b2"])):
        with api.http(key=key) as http:
            for upload_id in ids:
                upload(http, upload_id)

    with api.http(key=acme_user) as http:
        assert http.post("/v1/admin/tenants/acme/purge").status_code == 403, "admin role needed"
    with api.http(key=acme_admin) as http:
        refused = http.post("/v1/admin/tenants/beta/purge")
        assert refused.status_code == 403 and refused.json()["reason"] == "tenant_forbidden"
        assert http.get("/v1/admin/tenants/acme/purge").status_code == 404, "never purged"

        started = http.post("/v1/admin/tenants/acme/purge")
        assert started.status_code == 202 and started.headers["location"] == "/v1/admin/tenants/acme/purge"
        done = wait_done(http, "acme")

    assert done["counts"]["statuses"] == 3 and done["counts"]["objects"] == 3 and done["total"] >= 6
    assert [api.client.status(f"acme:{n}") for n in ("a1", "a2", "a3")] == [None] * 3
    assert all(api.client.status(f"beta:{n}") is not None for n in ("b1", "b2")), "beta untouched"
    bucket = api.settings.objects.bucket
    assert list(api.client.objects.list_refs(bucket, "acme:")) == []
    assert len(list(api.client.objects.list_refs(bucket, "beta:"))) == 2

    with api.http(key=acme_admin) as http:
        seen = http.get("/v1/admin/audit").json()
    assert [(e["action"], e["actor"], e["tenant"]) for e in seen[:2]] == [
        ("tenant.purge.done", f"key:{acme_admin_stored.key_id}", "acme"),
        ("tenant.purge.start", f"key:{acme_admin_stored.key_id}", "acme"),
    ]
    with api.http(key=operator) as http:
        everything = http.get("/v1/admin/audit", params={"action": "key."}).json()
    assert {e["action"] for e in everything} == {"key.create"} and len(everything) == 4
    assert {e["tenant"] for e in seen} == {"acme"}, "an admin of acme sees acme's entries only"
    assert [e["action"] for e in seen].count("key.create") == 2
