"""API keys of the HTTP API: `omnibind keys create | list | revoke` (see shared.api_keys)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import click

from producers.cli.base import handle_errors, main, settings_of
from shared.api_keys import ApiKeyStore, KeyInfo, Role, parse_roles, parse_tenants
from shared.audit import cli_actor
from shared.config import Settings
from shared.redis_client import redis_client_from_settings

_ROLE_NAMES = ",".join(role.value for role in Role)


@contextmanager
def _store(settings: Settings) -> Iterator[ApiKeyStore]:
    client = redis_client_from_settings(settings)
    try:
        yield ApiKeyStore(client, settings.queue_prefix)
    finally:
        client.close()


@main.group()
def keys() -> None:
    """API keys of the HTTP API: each acts for its tenants ('*' = every tenant) with its
    roles (ingest, search, read, moderate, admin). Stored hashed in Redis; a revoked key
    stops working within seconds. OMNIBIND_API__KEYS keys are operator keys ('*', every
    role). Guide: docs/http_api.md."""


@keys.command("create")
@click.option(
    "--tenant",
    "tenant_names",
    multiple=True,
    required=True,
    help="a tenant the key acts for (repeat, or comma-separate, for several); '*' = every tenant (operators)",
)
@click.option("--roles", "role_names", required=True, help=f"comma-separated roles: {_ROLE_NAMES}")
@click.pass_context
@handle_errors
def create(ctx: click.Context, tenant_names: tuple[str, ...], role_names: str) -> None:
    """Create a key and print it (on stdout, alone): it is shown this once, never stored."""
    try:
        tenants = parse_tenants(tenant_names)
        roles = parse_roles([role_names])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    with _store(settings_of(ctx)) as store:
        stored, key = store.create(tenants, roles, actor=cli_actor())
    click.echo(key)
    click.echo(
        f"created key {stored.key_id} for tenants {','.join(stored.tenants)} with roles "
        f"{','.join(stored.roles)}; store it now: it cannot be shown again",
        err=True,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON document per key")
@click.pass_context
@handle_errors
def list_keys(ctx: click.Context, as_json: bool) -> None:
    """The managed keys: id, tenants, roles, created, last used (never the key itself)."""
    with _store(settings_of(ctx)) as store:
        infos = store.list()
    if as_json:
        for info in infos:
            click.echo(json.dumps(_doc(info)))
        return
    click.echo(_table(infos))


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
@handle_errors
def revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke the key KEY_ID (as `omnibind keys list` shows it): every API process refuses
    it within seconds."""
    with _store(settings_of(ctx)) as store:
        removed = store.revoke(key_id, actor=cli_actor())
    if not removed:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"revoked key {key_id}")


def _doc(info: KeyInfo) -> dict[str, object]:
    return {
        "id": info.key_id,
        "tenants": list(info.tenants),
        "roles": [role.value for role in info.roles],
        "created_at": info.created_at.isoformat(),
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
    }


def _table(infos: list[KeyInfo]) -> str:
    if not infos:
        return "no managed keys"
    lines = [f"{'id':<16}  {'tenants':<24}  {'roles':<34}  {'created':<20}  last used"]
    for info in infos:
        used = info.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if info.last_used_at else "never"
        lines.append(
            f"{info.key_id:<16}  {','.join(info.tenants):<24}  {','.join(r.value for r in info.roles):<34}  "
            f"{info.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20}  {used}"
        )
    return "\n".join(lines)
