"""Tenant isolation over real HTTP: two tenants' keys against one API (real redis-server,
local object store; no workers). Every cross-tenant attempt fails with 404/403/422 exactly
like an attempt on nothing, and the other tenant's status record and object stay as they were.
(Search across tenants with live workers: tests/http/test_api_pipeline.py.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from shared.api_keys import ALL_ROLES, ApiKeyStore, Role
from shared.errors import PermanentError
from shared.events import ObjectRef
from shared.status import Stage
from shared.vectors.records import ALL_TENANTS, tenants
from tests.http.conftest import API_KEY, RunningApi

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16  # sniffed as PNG; nothing decodes it here (no workers)
USER_ROLES = frozenset({Role.INGEST, Role.READ, Role.SEARCH})


@dataclass
class Tenants:
    api: RunningApi
    acme: str  # keys
    beta: str
    both: str

    def as_(self, key: str) -> httpx.Client:
        return self.api.http(key=key)


@pytest.fixture
def two_tenants(start_api: Callable[..., RunningApi]) -> Tenants:
    api = start_api()
    store = ApiKeyStore(api.client.redis, api.settings.queue_prefix)
    return Tenants(
        api,
        acme=store.create(tenants("acme"), USER_ROLES)[1],
        beta=store.create(tenants("beta"), USER_ROLES)[1],
        both=store.create(tenants("acme", "beta"), USER_ROLES)[1],
    )


def _acme_photo(t: Tenants) -> dict[str, str]:
    with t.as_(t.acme) as http:
        reply = http.post("/v1/uploads", files={"file": ("photo.png", PNG)}, data={"id": "doc-1"})
    assert reply.status_code == 202, reply.text
    return reply.json()


def test_uploads_are_stored_under_the_keys_tenant_and_a_qualified_id(two_tenants: Tenants) -> None:
    accepted = _acme_photo(two_tenants)
    assert accepted["id"] == "acme:doc-1" and accepted["status_url"] == "/v1/uploads/acme:doc-1"
    record = two_tenants.api.client.status("acme:doc-1")
    assert record is not None and record.tenant == "acme"
    assert record.object is not None and record.object.key == "acme:doc-1/photo.png"
    with two_tenants.as_(two_tenants.acme) as http:
        assert http.get("/v1/uploads/doc-1").json()["upload_id"] == "acme:doc-1"
        assert http.get("/v1/uploads/acme:doc-1").status_code == 200


def test_another_tenants_status_answers_404_like_a_missing_id(two_tenants: Tenants) -> None:
    _acme_photo(two_tenants)
    with two_tenants.as_(two_tenants.beta) as http:
        for name in ("doc-1", "acme:doc-1"):
            reply = http.get(f"/v1/uploads/{name}")
            missing = http.get(f"/v1/uploads/{name.replace('doc-1', 'no-such-id')}")
            assert reply.status_code == missing.status_code == 404
            assert reply.json()["reason"] == missing.json()["reason"] == "upload_not_found"
            assert reply.json()["message"] == missing.json()["message"].replace("no-such-id", "doc-1")
    with two_tenants.as_(two_tenants.both) as http:
        assert http.get("/v1/uploads/acme:doc-1").status_code == 200
        assert http.get("/v1/uploads/doc-1").status_code == 404  # several tenants: name the qualified id


def test_posting_another_tenants_id_never_touches_its_upload_or_object(two_tenants: Tenants) -> None:
    _acme_photo(two_tenants)
    api = two_tenants.api
    # Finished (here: failed), so that a resubmission of the same id would start a new run.
    api.client.statuses.fail("acme:doc-1", Stage.PREPROCESS, PermanentError("test", reason="corrupt_media"))
    before = api.client.status("acme:doc-1")
    assert before is not None and before.terminal
    original = ObjectRef(bucket=api.settings.objects.bucket, key="acme:doc-1/photo.png")
    with two_tenants.as_(two_tenants.beta) as http:
        replies = [
            http.post("/v1/uploads", files={"file": ("photo.png", PNG + b"evil")}, data={"id": name})
            for name in ("doc-1", "acme:doc-1")
        ]
        text = http.post("/v1/uploads", json={"id": "doc-1", "text": "overwritten"})
    assert [r.json()["id"] for r in replies] == ["beta:doc-1", "beta:acme:doc-1"]
    assert text.status_code == 200 and text.json()["id"] == "beta:doc-1"  # its own run, unfinished
    assert api.client.status("acme:doc-1") == before
    assert api.client.objects.get(original, max_bytes=1024) == PNG
    assert api.client.status("beta:doc-1") is not None and api.client.status("beta:doc-1").tenant == "beta"  # type: ignore[union-attr]


def test_indexing_another_tenants_object_by_its_key_is_refused_like_a_missing_object(two_tenants: Tenants) -> None:
    _acme_photo(two_tenants)
    bucket = two_tenants.api.settings.objects.bucket
    with two_tenants.as_(two_tenants.beta) as http:
        stolen = http.post(
            "/v1/uploads", json={"id": "steal", "object": {"bucket": bucket, "key": "acme:doc-1/photo.png"}}
        )
        missing = http.post("/v1/uploads", json={"id": "miss", "object": {"bucket": bucket, "key": "beta:none/x.png"}})
        elsewhere = http.post(
            "/v1/uploads", json={"id": "other", "object": {"bucket": "private", "key": "beta:x/y.png"}}
        )
        own = http.post("/v1/uploads", files={"file": ("mine.png", PNG)}, data={"id": "mine"})
        again = http.post(
            "/v1/uploads", json={"id": "mine-again", "object": {"bucket": bucket, "key": "beta:mine/mine.png"}}
        )
    for reply in (stolen, missing, elsewhere):
        assert reply.status_code == 422 and reply.json()["reason"] == "object_not_found", reply.text
    assert stolen.json()["message"].replace("acme:doc-1/photo.png", "K") == missing.json()["message"].replace(
        "beta:none/x.png", "K"
    )
    assert own.status_code == 202 and again.status_code == 202, again.text
    for name in ("beta:steal", "beta:miss", "beta:other"):
        assert two_tenants.api.client.status(name) is None


def test_objects_of_mapped_locations_belong_to_their_tenant_as_in_the_bridge(
    start_api: Callable[..., RunningApi],
) -> None:
    """OMNIBIND_BRIDGE__OBJECT_TENANTS decides for the API as for the bridge: beta's key may
    index beta's platform objects, acme's key never (answered like a missing object)."""
    api = start_api(bridge={"object_tenants": {"platform/beta/": "beta", "platform/acme/": "acme"}})
    store = ApiKeyStore(api.client.redis, api.settings.queue_prefix)
    acme, beta = (store.create(tenants(name), USER_ROLES)[1] for name in ("acme", "beta"))
    for key in ("beta/cat.png", "acme/dog.png", "nobody/x.png"):
        api.client.objects.put("platform", key, PNG)

    def post(key: str, upload_id: str, object_key: str, **extra: str) -> httpx.Response:
        with api.http(key=key) as http:
            return http.post(
                "/v1/uploads", json={"id": upload_id, "object": {"bucket": "platform", "key": object_key}, **extra}
            )

    own = post(beta, "cat", "beta/cat.png")
    stolen = post(acme, "cat", "beta/cat.png")
    unowned = post(acme, "x", "nobody/x.png")
    assert own.status_code == 202 and own.json()["id"] == "beta:cat", own.text
    for reply in (stolen, unowned):
        assert reply.status_code == 422 and reply.json()["reason"] == "object_not_found", reply.text
    assert api.client.status("acme:cat") is None and api.client.status("acme:x") is None
    record = api.client.status("beta:cat")
    assert record is not None and record.tenant == "beta"
    # An operator acting for a tenant is held to the same rule; naming none, it may name any object.
    assert post(API_KEY, "op-cat", "beta/cat.png", tenant="acme").status_code == 422
    assert post(API_KEY, "op-any", "beta/cat.png").status_code == 202


def test_a_body_tenant_the_key_does_not_cover_is_refused_with_403(two_tenants: Tenants) -> None:
    with two_tenants.as_(two_tenants.beta) as http:
        replies = [
            http.post("/v1/uploads", json={"id": "x", "text": "hi", "tenant": "acme"}),
            http.post("/v1/uploads", files={"file": ("p.png", PNG)}, data={"id": "y", "tenant": "acme"}),
            http.post("/v1/search", json={"text": "hi", "tenant": "acme"}),
            http.post("/v1/search", files={"file": ("p.png", PNG)}, data={"tenant": "acme"}),
        ]
    for reply in replies:
        assert reply.status_code == 403 and reply.json()["reason"] == "tenant_forbidden", reply.text
    for name in ("x", "y", "acme:x", "acme:y", "beta:x", "beta:y"):
        assert two_tenants.api.client.status(name) is None


def test_a_key_of_several_tenants_names_one_of_them(two_tenants: Tenants) -> None:
    with two_tenants.as_(two_tenants.both) as http:
        unnamed = http.post("/v1/uploads", json={"id": "x", "text": "hi"})
        named = http.post("/v1/uploads", json={"id": "x", "text": "hi", "tenant": "beta"})
        status = http.get("/v1/uploads/beta:x")
    assert unnamed.status_code == 422 and unnamed.json()["reason"] == "tenant_required"
    assert named.status_code == 202 and named.json()["id"] == "beta:x"
    assert status.json()["tenant"] == "beta"


def test_operator_keys_see_every_tenant_and_qualify_ids_only_when_naming_one(two_tenants: Tenants) -> None:
    _acme_photo(two_tenants)
    with two_tenants.as_(API_KEY) as http:
        assert http.get("/v1/uploads/acme:doc-1").status_code == 200
        assert http.post("/v1/uploads", json={"id": "op-1", "text": "hi"}).json()["id"] == "op-1"
        assert http.post("/v1/uploads", json={"id": "op-2", "text": "hi", "tenant": "beta"}).json()["id"] == "beta:op-2"
    assert two_tenants.api.client.status("op-1").tenant is None  # type: ignore[union-attr]
    with two_tenants.as_(two_tenants.beta) as http:
        assert http.get("/v1/uploads/op-1").status_code == 404  # no tenant: operators only
        assert http.get("/v1/uploads/op-2").status_code == 200


def test_an_id_too_long_once_qualified_is_refused(two_tenants: Tenants) -> None:
    with two_tenants.as_(two_tenants.acme) as http:
        as_json = http.post("/v1/uploads", json={"id": "x" * 128, "text": "hi"})
        as_file = http.post("/v1/uploads", files={"file": ("p.png", PNG)}, data={"id": "y" * 128})
    assert as_json.status_code == 422 and as_json.json()["reason"] == "invalid_event"
    assert as_file.status_code == 422


def test_scope_helpers_never_widen_a_key() -> None:
    from producers.http.tenancy import id_to_read, qualify, search_scope
    from shared.api_keys import KeyScope

    acme = KeyScope(tenants("acme"), ALL_ROLES)
    assert search_scope(acme, None) == tenants("acme")
    assert search_scope(KeyScope.operator(), None) is ALL_TENANTS
    assert search_scope(KeyScope.operator(), "beta") == tenants("beta")
    assert qualify("acme", "acme:x") == "acme:x" and qualify("acme", "acmex") == "acme:acmex"
    assert id_to_read(acme, "beta:x") == "acme:beta:x"
