"""Managed API keys: scope (tenants, roles), storage (hashed in Redis), revocation, last use,
and the `omnibind keys` commands, against a real redis-server and the API over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from producers.cli import main
from producers.http.auth import ApiKeys, KeyResolver
from shared.api_keys import ALL_ROLES, ApiKeyStore, KeyScope, Role, parse_roles, parse_tenants
from shared.vectors.records import ALL_TENANTS, tenants
from tests.http.conftest import API_KEY, RunningApi
from tests.support.waiting import wait_until

POLL_DEADLINE_S = 30.0


def key_store(api: RunningApi) -> ApiKeyStore:
    return ApiKeyStore(api.client.redis, api.settings.queue_prefix)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_without_the_role_of_a_route_is_refused_with_403(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    _, ingest_only = key_store(api).create(tenants("acme"), frozenset({Role.INGEST}))
    with api.http(key=ingest_only) as http:
        accepted = http.post("/v1/uploads", json={"id": "one", "text": "hello", "tenant": "acme"})
        status = http.get(f"/v1/uploads/{accepted.json()['id']}")
        search = http.post("/v1/search", json={"text": "hello"})
        metrics = http.get("/metrics")
    assert accepted.status_code == 202
    for reply in (status, search, metrics):
        assert reply.status_code == 403, reply.request.url
        assert reply.json()["reason"] == "forbidden" and "lacks the role" in reply.json()["message"]


def test_static_keys_are_operator_keys_with_every_role(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    key_store(api).create(tenants("acme"), frozenset({Role.READ}))  # managed keys do not switch static ones off
    with api.http(key=API_KEY) as http:
        assert http.post("/v1/uploads", json={"id": "op-1", "text": "hi"}).status_code == 202
        assert http.get("/v1/uploads/op-1").status_code == 200
        assert http.get("/metrics").status_code == 200
    scope = KeyResolver(ApiKeys.from_secret(SecretStr(API_KEY)), lambda: key_store(api)).resolve(API_KEY)
    assert scope == KeyScope(ALL_TENANTS, ALL_ROLES)


def refused(http: httpx.Client, path: str) -> httpx.Response | None:
    """The reply to GET `path` if it is a 401, else None."""
    reply = http.get(path)
    return reply if reply.status_code == 401 else None


def test_a_managed_key_alone_switches_authentication_on(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(api={"keys": None})
    with api.http(key=None) as http:
        assert http.post("/v1/uploads", json={"id": "open-1", "text": "hi"}).status_code == 202
    _, key = key_store(api).create(ALL_TENANTS, ALL_ROLES)
    with api.http(key=None) as http:
        reply = wait_until(
            lambda: refused(http, "/v1/uploads/open-1"),
            timeout_s=POLL_DEADLINE_S,
            what="authentication to switch on",
            poll_s=0.2,
        )
    with api.http(key=key) as http:
        assert http.get("/v1/uploads/open-1").status_code == 200
    assert reply.json()["reason"] == "unauthorized"


def test_a_revoked_key_is_refused_by_the_running_api(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    stored, key = key_store(api).create(tenants("acme"), frozenset({Role.READ}))
    with api.http(key=key) as http:
        assert http.get("/v1/uploads/nothing").status_code == 404
        assert key_store(api).revoke(stored.key_id)
        reply = wait_until(
            lambda: refused(http, "/v1/uploads/nothing"),
            timeout_s=POLL_DEADLINE_S,
            what="the revoked key to be refused",
            poll_s=0.2,
        )
    assert reply.json()["message"] == "invalid API key"
    assert not key_store(api).revoke(stored.key_id)


def test_revocation_takes_effect_once_the_cache_entry_is_older_than_its_lifetime(
    start_api: Callable[..., RunningApi],
) -> None:
    api = start_api()
    clock = FakeClock()
    resolver = KeyResolver(ApiKeys(()), lambda: key_store(api), cache_s=2.0, clock=clock)
    stored, key = key_store(api).create(tenants("acme", "beta"), frozenset({Role.SEARCH, Role.READ}))
    assert resolver.resolve(key) == KeyScope(
        tenants("acme", "beta"), frozenset({Role.SEARCH, Role.READ}), stored.key_id
    )
    key_store(api).revoke(stored.key_id)
    clock.now += 1.9
    assert resolver.resolve(key) is not None  # cached: at most cache_s old
    clock.now += 0.2
    assert resolver.resolve(key) is None


def test_wrong_secrets_and_malformed_managed_keys_are_refused(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    _stored, key = key_store(api).create(tenants("acme"), frozenset({Role.READ}))
    resolver = KeyResolver(ApiKeys.from_secret(SecretStr(API_KEY)), lambda: key_store(api))
    prefix, key_id, secret = key.split("_", 2)
    for wrong in (key + "x", key[:-1], f"{prefix}_{key_id}_", f"{prefix}_{'0' * 16}_{secret}", f"obk__{secret}"):
        assert resolver.resolve(wrong) is None, wrong
    assert resolver.resolve(key) is not None


def test_last_use_is_recorded_at_most_once_a_minute(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    clock = FakeClock()
    store = key_store(api)
    resolver = KeyResolver(ApiKeys(()), lambda: store, touch_every_s=60.0, clock=clock)
    _stored, key = store.create(tenants("acme"), frozenset({Role.READ}))
    assert store.list()[0].last_used_at is None
    resolver.resolve(key)
    first = store.list()[0].last_used_at
    assert first is not None
    clock.now += 30.0
    resolver.resolve(key)
    assert store.list()[0].last_used_at == first
    clock.now += 31.0
    resolver.resolve(key)
    later = store.list()[0].last_used_at
    assert later is not None and later > first


def test_keys_are_stored_as_digests_only(start_api: Callable[..., RunningApi], redis_conn: redis.Redis) -> None:
    api = start_api()
    stored, key = key_store(api).create(tenants("acme"), frozenset({Role.INGEST}))
    with api.http(key=key) as http:
        http.get("/v1/uploads/x")
    secret = key.split("_", 2)[2]
    dump = json.dumps({k: redis_conn.dump(k).hex() for k in redis_conn.keys("*")})  # type: ignore[union-attr]
    everything = " ".join(str(redis_conn.hgetall(k)) for k in redis_conn.keys("omnibind:api_keys*"))  # type: ignore[union-attr]
    assert secret not in everything and secret.encode().hex() not in dump
    assert stored.digest in everything


def test_scope_names_are_parsed_and_checked() -> None:
    assert parse_tenants(["acme,beta", " gamma "]) == tenants("acme", "beta", "gamma")
    assert parse_tenants(["*"]) is ALL_TENANTS
    assert parse_roles(["ingest, search"]) == frozenset({Role.INGEST, Role.SEARCH})
    for bad in (["acme:x"], ["a/b"], [""], ["*", "acme"], ["-x"]):
        with pytest.raises(ValueError):
            parse_tenants(bad)
    for bad_roles in ([""], ["ingest,root"]):
        with pytest.raises(ValueError):
            parse_roles(bad_roles)


# -- omnibind keys ----------------------------------------------------------------------------


def run_cli(redis_url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    env = {"OMNIBIND_REDIS_URL": redis_url, "OMNIBIND_DATA_DIR": str(tmp_path / "data")}
    result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_keys_create_prints_the_key_once_and_it_authenticates(
    start_api: Callable[..., RunningApi], redis_url: str, tmp_path: Path
) -> None:
    api = start_api()
    code, out, err = run_cli(redis_url, tmp_path, "keys", "create", "--tenant", "acme", "--roles", "ingest,search")
    assert code == 0, err
    key = out.strip()
    assert key.startswith("obk_") and "\n" not in key and "store it now" in err
    with api.http(key=key) as http:
        assert http.post("/v1/uploads", json={"text": "hi", "tenant": "acme"}).status_code == 202
        assert http.get("/v1/uploads/anything").status_code == 403  # no read role
    (info,) = key_store(api).list()
    assert info.tenants == ("acme",) and set(info.roles) == {Role.INGEST, Role.SEARCH}


def test_keys_create_refuses_unknown_roles_and_bad_tenants(redis_url: str, tmp_path: Path) -> None:
    code, _, err = run_cli(redis_url, tmp_path, "keys", "create", "--tenant", "acme", "--roles", "ingest,root")
    assert code == 2 and "unknown role 'root'" in err
    code, _, err = run_cli(redis_url, tmp_path, "keys", "create", "--tenant", "a:b", "--roles", "read")
    assert code == 2 and "invalid tenant" in err
    code, out, _ = run_cli(redis_url, tmp_path, "keys", "list")
    assert out.strip() == "no managed keys"


def test_keys_list_shows_scope_and_last_use_but_never_the_key(
    start_api: Callable[..., RunningApi], redis_url: str, tmp_path: Path
) -> None:
    api = start_api()
    key = run_cli(redis_url, tmp_path, "keys", "create", "--tenant", "*", "--roles", "admin")[1].strip()
    run_cli(redis_url, tmp_path, "keys", "create", "--tenant", "acme", "--tenant", "beta", "--roles", "read")
    with api.http(key=key) as http:
        assert http.get("/metrics").status_code == 200
    code, table, _ = run_cli(redis_url, tmp_path, "keys", "list")
    assert code == 0 and key not in table and key.split("_", 2)[2] not in table
    code, lines, _ = run_cli(redis_url, tmp_path, "keys", "list", "--json")
    docs = [json.loads(line) for line in lines.splitlines()]
    assert [(d["tenants"], d["roles"]) for d in docs] == [(["*"], ["admin"]), (["acme", "beta"], ["read"])]
    assert docs[0]["last_used_at"] is not None and docs[1]["last_used_at"] is None
    assert docs[0]["id"] in table and "never" in table
    assert key not in lines


def test_keys_revoke_removes_the_key(start_api: Callable[..., RunningApi], redis_url: str, tmp_path: Path) -> None:
    api = start_api()
    stored, _ = key_store(api).create(tenants("acme"), frozenset({Role.READ}))
    code, out, _ = run_cli(redis_url, tmp_path, "keys", "revoke", stored.key_id)
    assert code == 0 and f"revoked key {stored.key_id}" in out
    assert key_store(api).list() == []
    code, _, err = run_cli(redis_url, tmp_path, "keys", "revoke", stored.key_id)
    assert code == 1 and f"no key {stored.key_id}" in err
