"""Integration processes: the ingest bridge and the webhook dispatcher (docs/integrating.md)."""

from __future__ import annotations

import socket

import click

from producers.cli.base import handle_errors, main, settings_of, stop_on_signals
from producers.client import Client
from shared.heartbeat import live_workers


def _check_alive(ctx: click.Context, kind: str) -> None:
    """Exit 0 if a `kind` process on this host has a fresh heartbeat (container healthcheck)."""
    with Client(settings_of(ctx)) as client:
        beats = live_workers(client.redis, client.settings.queue_prefix, kind)
    mine = [b for b in beats if b.get("host") == socket.gethostname()]
    if not mine:
        raise click.ClickException(f"no live {kind} process on this host")
    click.echo(f"{len(mine)} live {kind} process(es)")


@main.command()
@click.option("--stream/--no-stream", default=None, help="consume {prefix}:ingest (default: OMNIBIND_BRIDGE__STREAM)")
@click.option("--minio/--no-minio", default=None, help="consume MinIO notifications (default: OMNIBIND_BRIDGE__MINIO)")
@click.option("--check", is_flag=True, help="only check that a bridge on this host is alive (healthcheck)")
@click.pass_context
@handle_errors
def bridge(ctx: click.Context, stream: bool | None, minio: bool | None, check: bool) -> None:
    """Feed the pipeline from other platforms until Ctrl-C: UploadEvent JSON documents added to
    the Redis stream {prefix}:ingest (any language: XADD ... event '{json}'), and MinIO bucket
    notifications (created objects are embedded, removed ones deleted from the index)."""
    if check:
        _check_alive(ctx, "bridge")
        return
    from producers.bridge.service import run_bridge

    settings = settings_of(ctx)
    stopping = stop_on_signals()
    run_bridge(
        settings,
        stopping,
        stream=settings.bridge.stream if stream is None else stream,
        minio=settings.bridge.minio if minio is None else minio,
    )


@main.command()
@click.option("--check", is_flag=True, help="only check that a dispatcher on this host is alive (healthcheck)")
@click.pass_context
@handle_errors
def webhooks(ctx: click.Context, check: bool) -> None:
    """Deliver every result to its source's webhook (OMNIBIND_WEBHOOKS__TARGETS) until Ctrl-C:
    signed JSON POSTs, retried with backoff, each outcome logged to {prefix}:webhooks:deliveries."""
    if check:
        _check_alive(ctx, "webhooks")
        return
    from producers.webhooks.service import run_webhooks

    run_webhooks(settings_of(ctx), stop_on_signals())
