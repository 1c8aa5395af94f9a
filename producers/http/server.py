"""Running the API with uvicorn (`omnibind serve`)."""

from __future__ import annotations

import ipaddress

import uvicorn

from producers.http.app import create_app
from producers.http.auth import parse_keys
from shared.config import Settings
from shared.errors import ConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str) -> None:
    """Raise `ConfigError` when the API would listen beyond loopback without API keys."""
    if not parse_keys(settings.api.keys) and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without authentication: set OMNIBIND_API__KEYS "
            "(comma-separated keys), or bind to 127.0.0.1"
        )


def uvicorn_config(settings: Settings, *, host: str, port: int) -> uvicorn.Config:
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
