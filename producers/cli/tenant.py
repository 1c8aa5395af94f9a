"""Tenants: `omnibind tenant purge TENANT` (see producers.purge) and `omnibind audit`."""

from __future__ import annotations

import json

import click

from producers.cli.base import connect, handle_errors, main, settings_of
from producers.purge import DEFAULT_BATCH, PHASES, PurgeProgress, TenantPurge, read_progress
from shared.audit import AuditEntry, AuditLog, cli_actor
from shared.redis_client import redis_client_from_settings
from shared.tenancy import valid_tenant


@main.group()
def tenant() -> None:
    """Tenants: purge everything omnibind keeps of one (guide: docs/operations.md)."""


def _line(progress: PurgeProgress) -> str:
    counts = ", ".join(f"{phase} {progress.counts.get(phase, 0)}" for phase in PHASES)
    return f"{progress.tenant}: {progress.state}, at {progress.phase}: {counts} (total {progress.total})"


@tenant.command("purge")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--status", "status_only", is_flag=True, help="only show where the last purge of NAME stands")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=DEFAULT_BATCH, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the final counts as one JSON document")
@click.pass_context
@handle_errors
def purge(ctx: click.Context, name: str, yes: bool, status_only: bool, batch_size: int, as_json: bool) -> None:
    """Delete everything of tenant NAME: status records, vectors, its objects in the uploads
    bucket, dead letters, decision-log entries, results and webhook deliveries. Prints
    progress per batch and the final count. Safe to run again: an interrupted purge
    continues where it stopped, a finished one removes what arrived since. Stop the
    tenant's sources first (revoke its keys, its bridge streams)."""
    if not valid_tenant(name):
        raise click.BadParameter(f"invalid tenant {name!r}", param_hint="NAME")
    with connect(ctx) as client:
        if status_only:
            progress = read_progress(client, name)
            click.echo(
                json.dumps(progress.as_doc())
                if progress and as_json
                else _line(progress)
                if progress
                else f"{name}: never purged"
            )
            return
        if not yes:
            click.confirm(f"Delete everything omnibind keeps of tenant {name!r}?", abort=True)
        job = TenantPurge(
            client, name, actor=cli_actor(), batch_size=batch_size, on_batch=lambda p: click.echo(_line(p), err=True)
        )
        final = job.run()
    if as_json:
        click.echo(json.dumps(final.as_doc()))
    else:
        click.echo(f"purged tenant {name}: {final.total} items removed (runs: {final.runs})")
        for phase in PHASES:
            click.echo(f"  {phase:<20} {final.counts.get(phase, 0)}")


def _entry_line(entry: AuditEntry) -> str:
    detail = json.dumps(entry.detail, sort_keys=True) if entry.detail else ""
    when = entry.at.isoformat(timespec="seconds")
    return f"{when}  {entry.action:<22} {entry.actor:<28} {entry.target}  {entry.tenant or '-'}  {detail}".rstrip()


@main.command()
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="show at most this many")
@click.option("--action", default=None, help="one action (key.create) or a family ending in '.' (key.)")
@click.option("--tenant", "tenant_name", default=None, help="only actions concerning this tenant")
@click.option("--actor", default=None, help="only actions of this actor (key:<id>, cli:<user>@<host>)")
@click.option("--json", "as_json", is_flag=True, help="one JSON document per entry")
@click.pass_context
@handle_errors
def audit(
    ctx: click.Context, limit: int, action: str | None, tenant_name: str | None, actor: str | None, as_json: bool
) -> None:
    """The audit log of admin actions, newest first: time, action, actor, target, tenant,
    detail (keys created and revoked, blocklist changes, moderation decisions and rescores,
    dead-letter retries, tenant purges)."""
    settings = settings_of(ctx)
    client = redis_client_from_settings(settings)
    try:
        entries = AuditLog.from_settings(client, settings).newest(
            limit=limit, action=action, tenant=tenant_name, actor=actor
        )
    finally:
        client.close()
    for entry in entries:
        click.echo(entry.model_dump_json() if as_json else _entry_line(entry))
