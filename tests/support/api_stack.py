"""The HTTP API (uvicorn on loopback) in front of a whole embedded stack (redis-server,
cpu/gpu/index Celery workers with the tiny model, LanceDB, the local object store): what the
module-scoped fixtures of the API's pipeline, review and console tests start (10-20 s each,
so once per module)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack
from shared.api_keys import ApiKeyStore, Role
from shared.config import Settings
from shared.vectors.records import tenants
from tests.support.api_server import ApiServer, start_api_server
from tests.support.stack import stack_settings
from tests.support.waiting import wait_until

FINISH_TIMEOUT_S = 180.0


@dataclasses.dataclass
class ApiStack:
    stack: Stack
    settings: Settings  # with redis_url set: what the API and `client` use
    server: ApiServer
    client: Client  # a producer client of the same stack, to look behind the API
    api_key: str  # the configured key (no tenant)
    log_dir: Path  # the workers' log files

    @property
    def url(self) -> str:
        return self.server.url

    def as_fields(self) -> dict[str, Any]:
        """Its fields by name: a test's subclass holding more is built with ``Sub(**running.as_fields(), ...)``."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def as_(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=120.0)

    def http(self) -> httpx.Client:
        return self.as_(self.api_key)

    def new_key(self, tenant: str, roles: frozenset[Role]) -> tuple[str, str]:
        """(key id, key) of a new stored API key of `tenant` with `roles`."""
        stored, key = ApiKeyStore(self.client.redis, self.settings.queue_prefix).create(tenants(tenant), roles)
        return stored.key_id, key

    def upload(self, key: str, name: str, data: bytes, upload_id: str) -> dict[str, Any]:
        """POST one upload with `key` and return its record once finished."""
        with self.as_(key) as http:
            reply = http.post("/v1/uploads", files={"file": (name, data)}, data={"id": upload_id})
            assert reply.status_code == 202, reply.text
            return wait_finished(http, reply.json()["id"])


@contextlib.contextmanager
def api_stack(root: Path, model_cache: Path, api_key: str, **overrides: Any) -> Iterator[ApiStack]:
    """Start the stack with `stack_settings(root, model_cache, **overrides)` (the API keyed
    with `api_key`, searches given 60 s), then the API and a client in front of it; stop all
    three afterwards. Worker logs go to ``root/logs``."""
    api = {"keys": SecretStr(api_key), "search_timeout_s": 60, **overrides.pop("api", {})}
    configured = stack_settings(root, model_cache, api=api, **overrides)
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(configured, log_dir=log_dir).start(ready_timeout_s=180)
    try:
        connected = configured.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
        server = start_api_server(connected)
        client = Client(connected, source="test")
        try:
            yield ApiStack(stack, connected, server, client, api_key, log_dir)
        finally:
            server.stop()
            client.close()
    finally:
        stack.stop()


def wait_finished(http: httpx.Client, upload_id: str, timeout_s: float = FINISH_TIMEOUT_S) -> dict[str, Any]:
    """The upload's record once it is indexed or failed (asserted within `timeout_s`)."""
    record: dict[str, Any] = {}

    def finished() -> dict[str, Any] | None:
        record.clear()
        record.update(http.get(f"/v1/uploads/{upload_id}").json())
        return dict(record) if record.get("status") in ("indexed", "failed") else None

    return wait_until(finished, timeout_s=timeout_s, what=lambda: f"{upload_id} to finish: {record}", poll_s=0.2)
