"""`omnibind reindex --model NAME`: re-embed stored uploads with another model (guide:
docs/operations.md, "Switching models"). The embedding runs in a worker process
(`python -m workers.reindex`, exec'd in place of this one, as `omnibind worker` is: the CLI
never loads torch); `--status` and `--failures` only read Redis."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from producers.cli.base import handle_errors, main, settings_of
from producers.stack import settings_env
from shared.models.catalog import CATALOG
from shared.redis_client import redis_client_from_settings
from shared.reindex import ReindexState, current_index, summary_line, target_index


@main.command()
@click.option("--model", "model", required=True, type=click.Choice(sorted(CATALOG)), help="the model to re-embed with")
@click.option("--tenant", default=None, help="only this tenant's uploads (default: every tenant, each kept apart)")
@click.option("--into", default=None, help="the target table/collection (default: named from the model)")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True, help="uploads per batch")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="a local checkpoint of MODEL (default: its download, as OMNIBIND_MODEL__CHECKPOINT would)",
)
@click.option("--fresh", is_flag=True, help="forget the saved cursor and start a new pass from the first upload")
@click.option("--status", "show_status", is_flag=True, help="print the saved progress and exit (embeds nothing)")
@click.option("--failures", "show_failures", is_flag=True, help="list the uploads that failed, with reasons, and exit")
@click.pass_context
@handle_errors
def reindex(
    ctx: click.Context,
    model: str,
    tenant: str | None,
    into: str | None,
    batch_size: int,
    checkpoint: Path | None,
    fresh: bool,
    show_status: bool,
    show_failures: bool,
) -> None:
    """Re-embed every stored upload with MODEL into an index of that model's own.

    \b
    Reads the configured index (OMNIBIND_VECTORS__TABLE / __COLLECTION, the current model's
    vectors), fetches each upload's object, embeds it with MODEL and writes the record, with
    the same id, tenant, metadata and moderation decision, into the index named from the
    model: LanceDB table "uploads__pe_av_base", Weaviate collection "OmnibindUpload_PeAvBase".
    The current index is never written: searches go on meanwhile.

    \b
    Resumable: progress is saved in Redis after every batch; run the same command again
    after a crash or Ctrl-C and it goes on after the last finished batch (an upload done
    twice is overwritten by id, never duplicated). Run it again once it has finished and
    it catches up: uploads indexed since are embedded, those already current are skipped.
    Tenants never mix: each record keeps its tenant; --tenant re-embeds one tenant only.
    Uploads that cannot be re-embedded (object deleted, inline text, content the model
    rejects) are recorded with their reason (--failures) and the run goes on.

    \b
    Cut over when it is done: set OMNIBIND_MODEL__NAME=MODEL and OMNIBIND_VECTORS__TABLE (or
    __COLLECTION) to the new index on every process and restart them; run reindex once
    more with the old settings to catch up on uploads indexed in between. Roll back by setting both back: the old
    index is left untouched. Then `omnibind rescore` applies MODEL's moderation policy
    section (docs/moderation.md).

    \b
    Exit status: 0 done (some uploads may have failed), 1 configuration error,
    2 stopped by a store or Redis that is down (run it again to resume).
    """
    settings = settings_of(ctx)
    target = into or target_index(settings, model)
    if show_status or show_failures:
        state = ReindexState(redis_client_from_settings(settings), settings.queue_prefix, target, tenant)
        if show_failures:
            for failure in state.failures():
                click.echo(f"{failure.upload_id}\t{failure.reason}\t{failure.error}")
            return
        progress = state.progress()
        if progress is None:
            click.echo(f"no reindex into {target} yet (reading {current_index(settings)})")
            return
        click.echo(f"reindex into {target} ({progress.model}): {summary_line(progress)}; updated {progress.updated_at}")
        return
    argv = [sys.executable, "-m", "workers.reindex", "--model", model, "--batch-size", str(batch_size)]
    argv += ["--tenant", tenant] if tenant else []
    argv += ["--into", into] if into else []
    argv += ["--fresh"] if fresh else []
    argv += ["--checkpoint", str(checkpoint)] if checkpoint else []
    env = {**os.environ, **settings_env(settings)}
    os.execvpe(argv[0], argv, env)
