"""API-key authentication through real HTTP: every route but health needs a key."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from pydantic import SecretStr

from producers.http.auth import ApiKeys, parse_keys
from tests.http.conftest import API_KEY, RunningApi


def test_requests_without_a_key_are_refused_with_401(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http(key=None) as http:
        replies = [
            http.get("/v1/uploads/some-id"),
            http.post("/v1/uploads", json={"text": "hello"}),
            http.post("/v1/search", json={"text": "hello"}),
            http.get("/metrics"),
        ]
    for reply in replies:
        assert reply.status_code == 401, reply.request.url
        assert reply.json()["reason"] == "unauthorized"
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert api.client.status("some-id") is None


def test_a_wrong_key_is_refused(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http(key=API_KEY + "x") as http:
        reply = http.post("/v1/uploads", json={"text": "hello"})
    assert reply.status_code == 401 and reply.json()["message"] == "invalid API key"


def test_bearer_and_x_api_key_headers_both_work(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with httpx.Client(base_url=api.url) as http:
        bearer = http.post("/v1/uploads", json={"text": "a"}, headers={"Authorization": f"Bearer {API_KEY}"})
        header = http.post("/v1/uploads", json={"text": "b"}, headers={"X-API-Key": API_KEY})
        basic = http.post("/v1/uploads", json={"text": "c"}, headers={"Authorization": f"Basic {API_KEY}"})
    assert (bearer.status_code, header.status_code, basic.status_code) == (202, 202, 401)


def test_each_of_several_keys_is_accepted(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(api={"keys": SecretStr(" first-key , second-key,")})
    statuses = []
    for key in ("first-key", "second-key", "third-key", ""):
        with api.http(key=key or None) as http:
            statuses.append(http.get("/v1/uploads/x").status_code)
    assert statuses == [404, 404, 401, 401]


def test_health_endpoints_need_no_key(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http(key=None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code == 503  # no workers, but no 401 either
        assert http.get("/openapi.json").status_code == 200


def test_metrics_can_be_made_public(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(api={"keys": SecretStr(API_KEY), "metrics_public": True})
    with api.http(key=None) as http:
        reply = http.get("/metrics")
    assert reply.status_code == 200 and "omnibind_queue_length" in reply.text


def test_without_configured_keys_authentication_is_off(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(api={"keys": None})
    with api.http(key=None) as http:
        assert http.post("/v1/uploads", json={"text": "hello"}).status_code == 202


def test_keys_are_parsed_and_compared_as_digests() -> None:
    assert parse_keys(SecretStr(" a ,b,, c ")) == ("a", "b", "c")
    assert parse_keys(None) == ()
    keys = ApiKeys.from_secret(SecretStr("alpha,beta"))
    assert keys.enabled and keys.accepts("beta") and not keys.accepts("alph") and not keys.accepts("alphaa")
    assert not any("alpha" in repr(d) for d in keys.digests)
    assert not ApiKeys.from_secret(SecretStr(" , ")).enabled
