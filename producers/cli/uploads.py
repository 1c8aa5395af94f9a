"""Feeding and following uploads: ingest, watch, status, search."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from producers.cli.base import handle_errors, main, settings_of, stop_on_signals
from producers.client import Client
from producers.files import iter_files
from producers.ingest import Summary, submit_files, wait_for
from shared.events import Modality
from shared.heartbeat import live_workers
from shared.status import StatusRecord
from shared.vectors.records import ALL_TENANTS, SearchFilters, SearchHit, tenants


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--wait", is_flag=True, help="wait until every upload is indexed or failed; print a summary")
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True, help="with --wait")
@click.option("--modality", type=click.Choice([m.value for m in Modality]), default="auto", show_default=True)
@click.option("--tenant", default=None)
@click.pass_context
@handle_errors
def ingest(
    ctx: click.Context, paths: tuple[Path, ...], wait: bool, timeout_s: float, modality: str, tenant: str | None
) -> None:
    """Submit files and folders (recursively) for embedding."""
    files = list(iter_files(paths))
    with Client(settings_of(ctx), source="cli") as client:
        submitted = submit_files(client, files, modality=Modality(modality), tenant=tenant)
        ids = [s.upload_id for s in submitted if s.upload_id]
        click.echo(f"submitted {len(ids)} of {len(files)} files")
        finished = wait_for(client, ids, timeout_s=timeout_s) if wait else {}
    summary = Summary(submitted, finished)
    if wait:
        _print_summary(summary)
    if summary.failures() or (wait and summary.counts["unfinished"]):
        sys.exit(1)


def _print_summary(summary: Summary) -> None:
    counts = summary.counts
    click.echo(
        f"indexed {counts['indexed']}, failed {counts['failed']}, "
        f"not submitted {counts['not submitted']}, unfinished {counts['unfinished']}"
    )
    for path, reason in summary.failures():
        click.echo(f"  FAILED {path}: {reason}")


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--interval", "interval_s", type=float, default=1.0, show_default=True, help="seconds between scans")
@click.option("--existing", is_flag=True, help="also ingest files already there at start")
@click.option("--tenant", default=None)
@click.pass_context
@handle_errors
def watch(ctx: click.Context, directory: Path, interval_s: float, existing: bool, tenant: str | None) -> None:
    """Ingest new files as they arrive in DIRECTORY (recursively) until Ctrl-C. A file is taken
    once its size and modification time stop changing between two scans."""
    from producers.watch import FolderWatcher

    stopping = stop_on_signals()
    with Client(settings_of(ctx), source="watch") as client:
        watcher = FolderWatcher(directory, include_existing=existing)
        click.echo(f"watching {directory} (Ctrl-C stops)", err=True)
        while not stopping():
            for path in watcher.scan():
                upload_id = client.submit(path, tenant=tenant, metadata={"filename": path.name})
                click.echo(f"{upload_id} {path}")
            time.sleep(interval_s)


@main.command()
@click.argument("upload_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def status(ctx: click.Context, upload_id: str | None, as_json: bool) -> None:
    """Show one upload's status, or (without ID) counts per status and the live workers."""
    with Client(settings_of(ctx)) as client:
        if upload_id:
            record = client.status(upload_id)
            if record is None:
                raise click.ClickException(f"no upload {upload_id}")
            click.echo(record.model_dump_json(indent=2) if as_json else _describe(record))
            return
        counts = {s.value: n for s, n in client.statuses.counts().items()}
        workers = live_workers(client.redis, client.settings.queue_prefix)
    if as_json:
        click.echo(json.dumps({"counts": counts, "workers": workers}, indent=2))
        return
    click.echo("uploads: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    kinds = sorted({str(w["kind"]) for w in workers})
    click.echo(
        "live workers: " + (", ".join(f"{k} x{sum(1 for w in workers if w['kind'] == k)}" for k in kinds) or "none")
    )


def _describe(record: StatusRecord) -> str:
    lines = [f"{record.upload_id}: {record.status.value}"]
    if record.object:
        lines.append(f"  object: {record.object.bucket}/{record.object.key}")
    if record.modality:
        lines.append(f"  modality: {record.modality.value}")
    for name, moment in record.timestamps.items():
        lines.append(f"  {name}: {moment.isoformat()}")
    if record.error_reason:
        lines.append(f"  error: {record.error_reason} at {record.failed_stage}: {record.error}")
    if record.flagged:
        lines.append(f"  flagged: {', '.join(record.categories)}")
    return "\n".join(lines)


@main.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--modality", type=click.Choice(["image", "text", "audio"]), default=None, help="only results of this modality"
)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--tenant", default=None)
@click.option("--flagged/--not-flagged", default=None, help="only flagged / only unflagged uploads")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def search(
    ctx: click.Context,
    text: str | None,
    image: Path | None,
    audio: Path | None,
    modality: str | None,
    k: int,
    tenant: str | None,
    flagged: bool | None,
    as_json: bool,
) -> None:
    """Cross-modal search: a TEXT query, or --image FILE, or --audio FILE."""
    if sum(x is not None for x in (text, image, audio)) != 1:
        raise click.UsageError("give exactly one of TEXT, --image, --audio")
    filters = SearchFilters(
        scope=tenants(tenant) if tenant else ALL_TENANTS,
        modality=Modality(modality) if modality else None,
        flagged=flagged,
    )
    with Client(settings_of(ctx)) as client:
        hits = client.search(
            text=text,
            image=image.read_bytes() if image else None,
            audio=audio.read_bytes() if audio else None,
            k=k,
            filters=filters,
        )
    click.echo(json.dumps([_hit_doc(h) for h in hits], indent=2) if as_json else _hits_table(hits))


def _hit_doc(hit: SearchHit) -> dict[str, Any]:
    record = hit.record
    ref = record.object
    return {
        "score": round(hit.score, 4),
        "upload_id": record.upload_id,
        "modality": record.modality.value,
        "object": ref.model_dump(exclude_none=True) if ref else None,
        "flagged": record.moderation.flagged,
        "model": record.model,
    }


def _hits_table(hits: list[SearchHit]) -> str:
    if not hits:
        return "no results"
    lines = [f"{'score':>7}  {'modality':<8}  object"]
    for hit in hits:
        ref = hit.record.object
        where = f"{ref.bucket}/{ref.key}" + (f" (etag {ref.etag})" if ref.etag else "") if ref else "(inline text)"
        lines.append(f"{hit.score:7.4f}  {hit.record.modality.value:<8}  {where}")
    return "\n".join(lines)
