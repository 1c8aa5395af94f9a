"""The HTTP API: `create_app(settings) -> FastAPI`.

Everything the API does goes through the producer `Client` (no torch, no worker code in
this process): uploads are stored and enqueued, statuses read from Redis, searches
embedded by the workers. Middleware, outermost first: request metrics, body size limits;
then FastAPI's routing with API-key auth on every route but health.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from producers.client import Client
from producers.http import browse, dead, health, media, review, search, uploads
from producers.http.admin import router as admin_router
from producers.http.auth import ApiKeys, KeyResolver
from producers.http.console import routes as console
from producers.http.docs import install_swagger_docs
from producers.http.errors import install_error_handlers
from producers.http.limits import BodyLimits, BodySizeLimit
from producers.http.metrics import RequestMetrics, build_registry, metrics_router
from producers.http.models import TextSearch
from producers.http.sessions import LOGIN_TTL_S, SessionStore
from producers.http.state import ApiState
from shared.api_keys import ApiKeyStore
from shared.config import Settings, get_settings
from shared.events import UploadEvent
from shared.tenancy import object_tenants

log = logging.getLogger(__name__)

TITLE = "omnibind"
API_VERSION = "1"
DESCRIPTION = """Embed uploads (images, text, audio) into one ImageBind space, score them for
moderation, index them, and search them across modalities.

Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>` (health endpoints are
open). Errors are JSON objects with a stable `reason` code. Guide: docs/http_api.md."""
# Models that only appear in request bodies the routes read themselves (see bodies.py).
BODY_MODELS: tuple[type[Any], ...] = (UploadEvent, TextSearch)


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> FastAPI:
    """An API app for `settings` (default: from the environment). `client` defaults to a
    new `Client` (source ``http``), closed when the app shuts down. No I/O happens here."""
    settings = settings or get_settings()
    owned = client is None
    client = client or Client(settings, source="http")
    keys = ApiKeys.from_secret(settings.api.keys)
    resolver = KeyResolver(keys, lambda: ApiKeyStore(client.redis, settings.queue_prefix))
    registry, http_metrics = build_registry(client)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not keys.enabled:
            log.info("no OMNIBIND_API__KEYS: only managed keys (omnibind keys) authenticate; none at all = no auth")
        yield
        if owned:
            client.close()

    # /docs is served from local assets (swagger_docs): it works offline, no CDN.
    app = FastAPI(
        title=TITLE, version=API_VERSION, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.omnibind = ApiState(
        settings=settings, client=client, api_keys=keys, registry=registry, object_owners=object_tenants(settings)
    )
    app.state.key_resolver = resolver
    app.state.sessions = SessionStore(lambda: client.redis, settings.queue_prefix, idle_s=settings.api.console_idle_s)
    app.state.login_sessions = SessionStore(
        lambda: client.redis, settings.queue_prefix, idle_s=LOGIN_TTL_S, name="login"
    )
    install_error_handlers(app, retry_after_s=settings.backpressure.retry_after_s)
    app.include_router(health.router)
    app.include_router(browse.router)  # GET /v1/uploads: before uploads' /uploads/{id} routes
    app.include_router(uploads.router)
    app.include_router(media.router)
    app.include_router(review.router)
    app.include_router(dead.router)
    app.include_router(search.router)
    app.include_router(admin_router)
    app.include_router(metrics_router(public=settings.api.metrics_public))
    app.include_router(console.router)
    app.mount("/console/static", console.STATIC, name="console-static")
    install_swagger_docs(app)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(BodySizeLimit, limits=BodyLimits.from_settings(settings))
    app.add_middleware(RequestMetrics, metrics=http_metrics)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, with the schemas of the bodies routes read themselves."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(body_schemas(schemas))
        app.openapi_schema = document
    return app.openapi_schema


def body_schemas(existing: dict[str, Any]) -> dict[str, Any]:
    """Component schemas of `BODY_MODELS` (validation mode). A model whose name is taken by
    a different (serialization-mode) schema gets the suffix ``Input``, as FastAPI does."""
    _, defs = models_json_schema(
        [(model, "validation") for model in BODY_MODELS], ref_template="#/components/schemas/{model}"
    )
    found: dict[str, Any] = defs.get("$defs", {})
    renamed = {name: f"{name}Input" for name, schema in found.items() if existing.get(name, schema) != schema}
    text = json.dumps(found)
    for name, new_name in renamed.items():
        text = text.replace(f'"#/components/schemas/{name}"', f'"#/components/schemas/{new_name}"')
    return {renamed.get(name, name): schema for name, schema in json.loads(text).items()}
