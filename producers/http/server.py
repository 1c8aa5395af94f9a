"""Running the API with uvicorn (`omnibind serve`)."""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable

import uvicorn

from producers.http.app import create_app
from producers.http.auth import parse_keys
from shared.api_keys import ApiKeyStore
from shared.config import Settings
from shared.errors import ConfigError
from shared.redis_client import redis_client_from_settings

ACCESS_LOGGER = "uvicorn.access"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str, *, managed_keys: Callable[[], int] | None = None) -> None:
    """Raise `ConfigError` when the API would listen beyond loopback without API keys:
    neither ``OMNIBIND_API__KEYS`` nor a managed key (`managed_keys()` counts them in Redis;
    a Redis that cannot tell raises its `RedisUnavailable`)."""
    if parse_keys(settings.api.keys) or is_loopback(host):
        return
    if managed_keys is None:
        managed_keys = functools.partial(_count_managed_keys, settings)
    if managed_keys() == 0:
        raise ConfigError(
            f"refusing to serve on {host} without authentication: create a key (omnibind keys create), "
            "set OMNIBIND_API__KEYS (comma-separated operator keys), or bind to 127.0.0.1"
        )


def _count_managed_keys(settings: Settings) -> int:
    client = redis_client_from_settings(settings)
    try:
        return ApiKeyStore(client, settings.queue_prefix).count()
    finally:
        client.close()


class DropQueryStrings(logging.Filter):
    """Removes the query string from uvicorn's access log lines: a client may send a key or
    token as ``?api_key=...``, and the log must not keep it. (uvicorn logs ``client, method,
    path with query, HTTP version, status`` as the record's arguments.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def drop_query_strings_from_access_log() -> None:
    """Install `DropQueryStrings` on uvicorn's access logger (once)."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, DropQueryStrings) for existing in access.filters):
        access.addFilter(DropQueryStrings())


def uvicorn_config(settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings for the API; its access log keeps no query strings."""
    drop_query_strings_from_access_log()
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        # Our logging set-up (text or JSON, upload ids) handles uvicorn's loggers too.
        log_config=None,
        server_header=False,
        # Behind a reverse proxy on the same host, trust its X-Forwarded-* headers only.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=30,
    )


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Serve the API until SIGINT/SIGTERM (graceful: requests in flight finish). Raises
    `ConfigError` for an unauthenticated non-loopback bind."""
    host = host or settings.api.host
    port = settings.api.port if port is None else port
    check_exposure(settings, host)
    server = uvicorn.Server(uvicorn_config(settings, host=host, port=port))
    server.run()
