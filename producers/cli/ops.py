"""Operations: `omnibind metrics` (Prometheus exporter), `omnibind flower` (Celery
dashboard), `omnibind probe` (HTTP healthcheck for containers). Guide: docs/operations.md."""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

import click

from producers.cli.base import handle_errors, main, settings_of, stop_on_signals
from shared.errors import ConfigError

LOOPBACK = "127.0.0.1"


@main.command()
@click.option("--host", default=None, help="address to bind (default: OMNIBIND_METRICS__HOST, 127.0.0.1)")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="default: OMNIBIND_METRICS__PORT, 9464")
@click.pass_context
@handle_errors
def metrics(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the pipeline's Prometheus metrics (read from Redis at each scrape) until Ctrl-C."""
    from prometheus_client import CollectorRegistry, start_http_server

    from shared.metrics.collector import PipelineCollector
    from shared.redis_client import redis_client_from_settings

    settings = settings_of(ctx)
    host = host or settings.metrics.host
    port = settings.metrics.port if port is None else port
    client = redis_client_from_settings(settings)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(client, settings))
    stopping = stop_on_signals()
    server, thread = start_http_server(port, addr=host, registry=registry)
    click.echo(f"serving metrics on http://{host}:{server.server_port}/metrics (Ctrl-C stops)", err=True)
    try:
        while not stopping():
            time.sleep(0.2)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        client.close()


def _option(args: Sequence[str], name: str) -> str | None:
    """The last value of Flower option ``--name`` in `args` (``--name=V`` or ``--name V``;
    Flower, like tornado, takes ``_`` and ``-`` alike), or None."""
    value: str | None = None
    for at, arg in enumerate(args):
        option, equals, given = arg.partition("=")
        if option.replace("_", "-") != f"--{name}":
            continue
        if equals:
            value = given
        elif at + 1 < len(args):
            value = args[at + 1]
    return value


def flower_arguments(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Flower's arguments: `args`, plus ``--address=127.0.0.1`` when neither they nor
    ``FLOWER_ADDRESS`` in `env` name an address (Flower's own default is every interface).

    Raises `ConfigError` for a non-loopback address without basic auth (``--basic-auth`` or
    ``FLOWER_BASIC_AUTH`` of the form user:password): Flower shows task arguments and can
    shut workers down.
    """
    from producers.http.server import is_loopback

    address = _option(args, "address")
    if address is None:
        address = env.get("FLOWER_ADDRESS")
    if address is None:
        return [*args, f"--address={LOOPBACK}"]
    auth = _option(args, "basic-auth") or env.get("FLOWER_BASIC_AUTH") or ""
    users = [pair.partition(":") for pair in auth.split(",")]
    if not is_loopback(address) and not all(user and sep and password for user, sep, password in users):
        raise ConfigError(
            f"refusing to run Flower on {address or 'every interface'} without authentication: give "
            "--basic-auth=USER:PASSWORD (or FLOWER_BASIC_AUTH), or bind to 127.0.0.1"
        )
    return list(args)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def flower(ctx: click.Context, flower_args: tuple[str, ...]) -> None:
    """Run Flower, the Celery dashboard, against omnibind's broker (extra arguments go to
    Flower, e.g. --port=5555 --basic-auth=user:pass). Binds 127.0.0.1 unless --address (or
    FLOWER_ADDRESS) says otherwise; any other address needs --basic-auth=user:password (or
    FLOWER_BASIC_AUTH). Needs `pip install omnibind[ops]`."""
    arguments = flower_arguments(flower_args, os.environ)
    try:
        import flower as _flower  # noqa: F401  (only to give a clear message when missing)
    except ImportError as exc:
        raise click.ClickException("Flower is not installed: pip install 'omnibind[ops]'") from exc
    from shared.queue import make_celery

    # The producer-side Celery app carries the broker URL and key prefix, no task code.
    make_celery(settings_of(ctx), "omnibind").start(["flower", *arguments])


@main.command()
@click.argument("url")
@click.option("--timeout", "timeout_s", type=float, default=5.0, show_default=True)
def probe(url: str, timeout_s: float) -> None:
    """Exit 0 when URL answers HTTP 2xx, else 1 (container healthchecks: no curl needed)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            status = reply.status
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"{url}: {exc}", err=True)
        sys.exit(1)
    if not 200 <= status < 300:
        click.echo(f"{url}: HTTP {status}", err=True)
        sys.exit(1)
