"""Feeding and following uploads: ingest, watch, delete, status, search."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from producers.cli.base import connect, handle_errors, main, require_workers, stop_on_signals
from producers.client import Client
from producers.files import iter_files
from producers.ingest import Outcome, Submitted, Summary, submit_file, submit_files, wait_for
from shared.errors import OmnibindError
from shared.events import DeleteRequest, Modality, UploadStatus
from shared.heartbeat import live_workers
from shared.media.sniff import VIDEO_CONTAINERS, sniff
from shared.status import StatusRecord
from shared.vectors.records import ALL_TENANTS, SearchFilters, SearchHit, tenants

PIPELINE_KINDS = ("cpu", "gpu", "index")
QUERY_KINDS = ("cpu", "gpu")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--wait", is_flag=True, help="wait until every upload is indexed or failed; print a summary")
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True, help="with --wait")
@click.option("--modality", type=click.Choice([m.value for m in Modality]), default="auto", show_default=True)
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True, help="one JSON line per file on stdout: path, id, outcome")
@click.pass_context
@handle_errors
def ingest(
    ctx: click.Context,
    paths: tuple[Path, ...],
    wait: bool,
    timeout_s: float,
    modality: str,
    tenant: str | None,
    as_json: bool,
) -> None:
    """Submit files and folders (recursively) for embedding.

    A file's id comes from its content (and tenant), so ingesting the same files again
    creates no second record: a file already indexed is skipped (outcome "exists"). Outcomes:
    submitted, exists, in_progress, duplicate (same content as an earlier file), error; with
    --wait: indexed, failed, unfinished, error. Exit code 1 when a file failed or was not
    submitted (or, with --wait, did not finish)."""
    files = list(iter_files(paths))
    with connect(ctx) as client:
        if wait:
            require_workers(client, PIPELINE_KINDS, "ingest --wait")
        submitted = submit_files(client, files, modality=Modality(modality), tenant=tenant, progress=not as_json)
        ids = list(dict.fromkeys(s.upload_id for s in submitted if s.upload_id))
        sent = sum(1 for s in submitted if s.outcome is Outcome.SUBMITTED)
        click.echo(f"submitted {sent} of {len(files)} files ({len(ids)} distinct)", err=as_json)
        finished = wait_for(client, ids, timeout_s=timeout_s, progress=not as_json) if wait else {}
    summary = Summary(submitted, finished)
    if as_json:
        for item in submitted:
            click.echo(json.dumps(_file_doc(item, summary if wait else None)))
    elif wait:
        _print_summary(summary)
    else:
        for path, reason in summary.failures():
            click.echo(f"  NOT SUBMITTED {path}: {reason}")
    if summary.failures() or (wait and summary.counts["unfinished"]):
        sys.exit(1)


def _file_doc(item: Submitted, summary: Summary | None) -> dict[str, Any]:
    """One line of `ingest --json`: the outcome of submitting, or (with a summary) the final one."""
    outcome, reason = summary.final(item) if summary is not None else (item.outcome, item.error)
    doc: dict[str, Any] = {"path": str(item.path), "id": item.upload_id, "outcome": outcome.value}
    if summary is not None and item.upload_id is not None:
        doc["submitted"] = item.outcome.value
    if reason:
        doc["reason"] = reason
    elif item.error:
        doc["note"] = item.error
    return doc


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
@click.option("--json", "as_json", is_flag=True, help="one JSON line per outcome on stdout")
@click.pass_context
@handle_errors
def watch(
    ctx: click.Context, directory: Path, interval_s: float, existing: bool, tenant: str | None, as_json: bool
) -> None:
    """Ingest new files as they arrive in DIRECTORY (recursively) until Ctrl-C. A file is taken
    once its size and modification time stop changing between two scans. Prints a line per
    outcome: when a file is submitted (or skipped: exists, in_progress, error), then when its
    upload ends (indexed, or failed with the reason)."""
    from producers.watch import FolderWatcher

    stopping = stop_on_signals()
    report = _Reporter(as_json)
    with connect(ctx, source="watch") as client:
        watcher = FolderWatcher(directory, include_existing=existing)
        click.echo(f"watching {directory} (Ctrl-C stops)", err=True)
        pending: dict[str, Path] = {}
        while not stopping():
            for path in watcher.scan():
                item = _submit_one(client, path, tenant)
                report(item.path, item.upload_id, item.outcome, item.error)
                if item.upload_id and item.outcome in (Outcome.SUBMITTED, Outcome.IN_PROGRESS):
                    pending[item.upload_id] = path
            finished = client.wait(list(pending), timeout_s=interval_s) if pending else {}
            for upload_id, record in finished.items():
                path = pending.pop(upload_id)
                failed = record.status is UploadStatus.FAILED
                reason = f"{record.error_reason}: {record.error}" if failed else None
                report(path, upload_id, Outcome.FAILED if failed else Outcome.INDEXED, reason)
            if not pending:
                time.sleep(interval_s)


def _submit_one(client: Client, path: Path, tenant: str | None) -> Submitted:
    """`submit_file` for the watcher: backpressure and an unreachable Redis are this file's
    outcome (the watcher goes on), not the end of the watch."""
    try:
        return submit_file(client, path, tenant=tenant)
    except OmnibindError as exc:  # Busy, RedisUnavailable: reported, the watch goes on
        return Submitted(path, None, f"{exc.reason}: {exc}", Outcome.ERROR)


class _Reporter:
    """Prints one line per outcome: ``OUTCOME ID PATH[: reason]``, or a JSON object."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, path: Path, upload_id: str | None, outcome: Outcome, reason: str | None) -> None:
        if self.as_json:
            doc = {"path": str(path), "id": upload_id, "outcome": outcome.value}
            click.echo(json.dumps({**doc, "reason": reason} if reason else doc))
            return
        click.echo(f"{outcome.value} {upload_id or '-'} {path}" + (f": {reason}" if reason else ""))


@main.command()
@click.argument("upload_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON line per id: id, outcome")
@click.pass_context
@handle_errors
def delete(ctx: click.Context, upload_ids: tuple[str, ...], as_json: bool) -> None:
    """Remove uploads from the index (their vector records). The deletion is recorded in Redis
    and done by an index worker (after a run in flight ends); a repeat is harmless. Outcome per
    id: requested, or not_found (no such upload: exit code 1)."""
    missing = False
    with connect(ctx) as client:
        for upload_id in upload_ids:
            request = DeleteRequest(upload_id=upload_id, reason="cli", removed_at=datetime.now(UTC))
            known = client.status(upload_id) is not None or client.vectors.get(upload_id) is not None
            if known:
                client.delete(request)
            missing = missing or not known
            outcome = "requested" if known else "not_found"
            doc = {"id": upload_id, "outcome": outcome}
            click.echo(json.dumps(doc) if as_json else f"{outcome} {upload_id}")
    if missing:
        sys.exit(1)


@main.command()
@click.argument("upload_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def status(ctx: click.Context, upload_id: str | None, as_json: bool) -> None:
    """Show one upload's status, or (without ID) counts per status and the live workers."""
    with connect(ctx) as client:
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
@click.option(
    "--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="a sound (or a video's sound)"
)
@click.option("--video", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="a video, by its frames")
@click.option(
    "--modality",
    type=click.Choice(["image", "text", "audio", "video"]),
    default=None,
    help="only results of this modality",
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
    video: Path | None,
    modality: str | None,
    k: int,
    tenant: str | None,
    flagged: bool | None,
    as_json: bool,
) -> None:
    """Cross-modal search: a TEXT query, or --image FILE, --audio FILE or --video FILE.

    Each upload is listed once, with the vector that matched best ("part": main, or e.g. a
    video's audio_track)."""
    if sum(x is not None for x in (text, image, audio, video)) != 1:
        raise click.UsageError("give exactly one of TEXT, --image, --audio, --video")
    filters = SearchFilters(
        scope=tenants(tenant) if tenant else ALL_TENANTS,
        modality=Modality(modality) if modality else None,
        flagged=flagged,
    )
    image_query = _query_file(image, Modality.IMAGE)
    audio_query = _query_file(audio, Modality.AUDIO)
    video_query = _query_file(video, Modality.VIDEO)
    with connect(ctx) as client:
        require_workers(client, QUERY_KINDS, "search")
        hits = client.search(text=text, image=image_query, audio=audio_query, video=video_query, k=k, filters=filters)
    click.echo(json.dumps([_hit_doc(h) for h in hits], indent=2) if as_json else _hits_table(hits))


def _query_file(path: Path | None, expected: Modality) -> bytes | None:
    """The bytes of a query file, refused with one line when they are not `expected`'s kind
    (checked here by content, as the workers would, before anything is sent)."""
    if path is None:
        return None
    data = path.read_bytes()
    sniffed = sniff(data)  # raises UnsupportedMedia / CorruptMedia: one line too
    found = sniffed.modality
    if expected is Modality.VIDEO and sniffed.format in VIDEO_CONTAINERS:
        return data  # whether it holds a video stream, the worker finds out (it opens the file)
    if found is not expected:
        hint = "pass the text itself as TEXT" if found is Modality.TEXT else f"use --{found.value} {path}"
        raise click.ClickException(f"{path} is {found.value}, not {expected.value}: {hint}")
    return data


def _hit_doc(hit: SearchHit) -> dict[str, Any]:
    record = hit.record
    ref = record.object
    return {
        "score": round(hit.score, 4),
        "upload_id": record.upload_id,
        "modality": record.modality.value,
        "part": hit.part,
        "object": ref.model_dump(exclude_none=True) if ref else None,
        "flagged": record.moderation.flagged,
        "model": record.model,
        **({"detail": hit.detail} if hit.detail else {}),
    }


def _hits_table(hits: list[SearchHit]) -> str:
    if not hits:
        return "no results"
    lines = [f"{'score':>7}  {'modality':<8}  {'matched':<11}  object"]
    for hit in hits:
        ref = hit.record.object
        where = f"{ref.bucket}/{ref.key}" + (f" (etag {ref.etag})" if ref.etag else "") if ref else "(inline text)"
        lines.append(f"{hit.score:7.4f}  {hit.record.modality.value:<8}  {hit.part:<11}  {where}")
        if hit.detail:  # e.g. transcript: said "..." at 0:03-0:07
            lines.append(f"{'':7}  {'':8}  {'':11}  matched {hit.detail}")
    return "\n".join(lines)
