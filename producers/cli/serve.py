"""`omnibind serve`: the HTTP API."""

from __future__ import annotations

import click

from producers.cli.base import handle_errors, main, settings_of


@main.command()
@click.option("--host", default=None, help="address to bind (default: OMNIBIND_API__HOST, 127.0.0.1)")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="port (default: OMNIBIND_API__PORT, 8000)")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API (uploads, status, search, health, metrics) until Ctrl-C.

    Needs the stack's Redis (and workers for searches); without OMNIBIND_API__KEYS it only
    binds to loopback. API guide: docs/http_api.md.
    """
    from producers.http.server import serve as run_server  # FastAPI/uvicorn only for this command

    run_server(settings_of(ctx), host=host, port=port)
