"""The OpenAPI document is published, served, and in sync with the code."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from producers.http.openapi import DOCUMENT, published_openapi, render
from tests.http.conftest import RunningApi


def test_docs_openapi_json_matches_the_code() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(published_openapi()), (
        "docs/openapi.json is stale: run python -m producers.http.openapi"
    )


def test_the_served_document_is_the_published_one(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http(key=None) as http:
        served = http.get("/openapi.json").json()
    assert served == json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert set(served["paths"]) == {
        "/healthz",
        "/readyz",
        "/v1/uploads",
        "/v1/uploads/{upload_id}",
        "/v1/uploads/{upload_id}/explain",
        "/v1/uploads/{upload_id}/decision",
        "/v1/uploads/{upload_id}/media",
        "/v1/uploads/{upload_id}/thumbnail",
        "/v1/review",
        "/v1/review/accuracy",
        "/v1/dead-letters",
        "/v1/dead-letters/{entry_id}/retry",
        "/v1/search",
        "/metrics",
        "/v1/admin/tenants/{tenant}/purge",
        "/v1/admin/audit",
    }
    upload_body = served["paths"]["/v1/uploads"]["post"]["requestBody"]["content"]
    assert set(upload_body) == {"application/json", "multipart/form-data"}
    assert {"HTTPBearer", "APIKeyHeader"} <= set(served["components"]["securitySchemes"])


def test_the_interactive_docs_load_their_assets_from_this_server(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http(key=None) as http:
        page = http.get("/docs")
        assets = re.findall(r"""(?:href|src)=['"]([^'"]+)['"]""", page.text)
        fetched = {asset: http.get(asset).status_code for asset in assets}
    assert page.status_code == 200 and assets
    assert all(asset.startswith("/") for asset in assets), assets  # nothing from a CDN
    assert set(fetched.values()) == {200}, fetched
