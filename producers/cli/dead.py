"""Dead letters: `omnibind dead` lists them, `omnibind dead --retry [ID...]` re-enqueues."""

from __future__ import annotations

import sys

import click

from producers.cli.base import handle_errors, main, settings_of
from producers.client import Client
from producers.dead_letters import Outcome, iter_dead_letters, retry_dead_letter, select_dead_letters
from shared.audit import cli_actor
from shared.streams import DeadLetter

_MESSAGE_CHARS = 100


@main.command()
@click.argument("ids", nargs=-1)
@click.option("--retry", is_flag=True, help="re-enqueue the given dead letters (entry or upload ids), or all")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True, help="list at most this many")
@click.option("--json", "as_json", is_flag=True, help="one JSON document per dead letter, event included")
@click.pass_context
@handle_errors
def dead(ctx: click.Context, ids: tuple[str, ...], retry: bool, limit: int, as_json: bool) -> None:
    """List dead letters (uploads that failed for good: bad input, retries used up, or a
    message that crashed its worker every time), oldest first: entry id, upload, stage,
    reason, error class, attempts, message. IDS narrow the list to those entry ids or
    upload ids.

    With --retry, each one's upload runs through the pipeline again (a new run of its status
    record) and the dead letter is removed. Without IDS, every dead letter is retried: fix
    the cause first (storage back, decoder fixed, limits raised)."""
    with Client(settings_of(ctx), source="cli") as client:
        if retry:
            _retry(client, ids)
            return
        if ids:
            letters, missing = select_dead_letters(client, ids)
            _warn_missing(missing)
        else:
            letters = []
            for letter in iter_dead_letters(client):
                letters.append(letter)
                if len(letters) >= limit:
                    break
        total = client.dead_letters.length()
    if as_json:
        for letter in letters[:limit]:
            click.echo(letter.model_dump_json())
        return
    click.echo(_table(letters[:limit]))
    click.echo(f"{total} dead letter(s) in all", err=True)


def _retry(client: Client, ids: tuple[str, ...]) -> None:
    letters, missing = select_dead_letters(client, ids)
    _warn_missing(missing)
    counts = {outcome: 0 for outcome in Outcome}
    for letter in letters:
        retried = retry_dead_letter(client, letter, actor=cli_actor())
        counts[retried.outcome] += 1
        detail = f" ({retried.detail})" if retried.detail else ""
        click.echo(f"{retried.entry_id}  {retried.upload_id or '-'}  {retried.outcome.value}{detail}")
    click.echo(", ".join(f"{outcome.value} {n}" for outcome, n in counts.items()), err=True)
    if missing or counts[Outcome.UNREADABLE] or counts[Outcome.REFUSED]:
        sys.exit(1)


def _warn_missing(missing: list[str]) -> None:
    for name in missing:
        click.echo(f"no dead letter {name}", err=True)


def _table(letters: list[DeadLetter]) -> str:
    if not letters:
        return "no dead letters"
    lines = [f"{'entry':<16}  {'upload':<26}  {'stage':<10}  {'reason':<22}  {'error class':<20}  tries  message"]
    for letter in letters:
        message = " ".join(letter.message.split())
        if len(message) > _MESSAGE_CHARS:
            message = message[: _MESSAGE_CHARS - 3] + "..."
        lines.append(
            f"{letter.entry_id:<16}  {letter.upload_id or '-':<26}  {letter.stage:<10}  {letter.reason:<22}  "
            f"{letter.error_class:<20}  {letter.attempts:>5}  {message}"
        )
    return "\n".join(lines)
