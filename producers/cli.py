"""`omnibind`: run the embedded stack, feed it, follow uploads, search.

Configuration comes from OMNIBIND_* environment variables (see the README); options here only
override what a single command needs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from producers.client import Client
from producers.files import iter_files
from producers.ingest import Summary, submit_files, wait_for
from producers.stack import WORKER_KINDS, Stack, settings_env, worker_argv
from shared.config import Settings, load_settings
from shared.errors import ConfigError, OmnibindError
from shared.events import Modality
from shared.heartbeat import live_workers
from shared.logs import configure_logging
from shared.vectors.records import SearchFilters, SearchHit

log = logging.getLogger("omnibind")
F = TypeVar("F", bound=Callable[..., Any])


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def handle_errors(func: F) -> F:
    """Turn our own errors into one clear line and exit code 1 (2 for configuration)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        except OmnibindError as exc:
            raise click.ClickException(f"{exc.reason}: {exc}") from exc

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING... (default: OMNIBIND_LOG_LEVEL or INFO)")
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """omnibind: embed every upload (image, text, audio) into one ImageBind space, score it
    for moderation, and index it for cross-modal search.

    \b
    Quick start (embedded stack: Redis, local object store, LanceDB):
      omnibind up                      # terminal 1: start Redis and the workers
      omnibind ingest ./photos --wait  # terminal 2: embed a folder
      omnibind search "a dog on a beach"
    Or all at once: omnibind demo [--model tiny]
    """
    try:
        settings = load_settings(**({"log_level": log_level} if log_level else {}))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(settings.log_level)
    ctx.obj = {"settings": settings}


# -- running the stack -----------------------------------------------------------------------


@main.command()
@click.option("--model", type=click.Choice(["huge", "tiny"]), default=None, help="tiny = random weights, offline")
@click.pass_context
@handle_errors
def up(ctx: click.Context, model: str | None) -> None:
    """Start the embedded stack: redis-server on loopback (data dir, AOF) plus cpu, gpu and
    index workers as child processes. Ctrl-C stops everything cleanly; a worker that dies is
    restarted."""
    settings = _settings(ctx)
    if model:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"name": model})})
    stack = Stack(settings)
    stopping = _stop_on_signals()
    click.echo(f"starting omnibind (data dir {settings.data_dir}, model {settings.model.name}) ...", err=True)
    with stack.start():
        click.echo(
            f"omnibind is up: redis {_redacted(stack.redis_url)}, workers {', '.join(WORKER_KINDS)}. Ctrl-C stops.",
            err=True,
        )
        while not stopping():
            time.sleep(1.0)
            stack.restart_dead()
        click.echo("stopping workers, then redis ...", err=True)


@main.command()
@click.argument("kind", type=click.Choice(list(WORKER_KINDS)))
@click.pass_context
def worker(ctx: click.Context, kind: str) -> None:
    """Run one production worker process (cpu, gpu or index) in the foreground."""
    settings = _settings(ctx)
    env = {**os.environ, **settings_env(settings), "OMNIBIND_WORKER__KIND": kind}
    argv = worker_argv(kind, settings)  # type: ignore[arg-type]
    os.execvpe(argv[0], argv, env)


@main.command()
@click.option("--queue", "kind", type=click.Choice(list(WORKER_KINDS)), required=True)
@click.option("--any-host", is_flag=True, help="accept a live worker on any host (default: this host)")
@click.pass_context
@handle_errors
def health(ctx: click.Context, kind: str, any_host: bool) -> None:
    """Exit 0 if a worker of KIND on this host has a fresh heartbeat (container healthcheck)."""
    import socket

    with Client(_settings(ctx)) as client:
        beats = live_workers(client.redis, client.settings.queue_prefix, kind)
    mine = [b for b in beats if any_host or b.get("host") == socket.gethostname()]
    if not mine:
        raise click.ClickException(f"no live {kind} worker")
    click.echo(f"{len(mine)} live {kind} worker(s)")


@main.command()
@click.option("--model", type=click.Choice(["huge", "tiny"]), default="huge", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="keep the demo's data here")
@click.option("--timeout", "timeout_s", type=float, default=900.0, show_default=True)
@click.pass_context
@handle_errors
def demo(ctx: click.Context, model: str, data_dir: Path | None, timeout_s: float) -> None:
    """Start the embedded stack, ingest the bundled samples (images, texts, audio), run a
    cross-modal search, shut down. Uses the real ImageBind checkpoint (downloaded once);
    --model tiny runs the same pipeline offline with a tiny random-weight model."""
    from producers.demo import run_demo

    sys.exit(run_demo(_settings(ctx), model=model, data_dir=data_dir, timeout_s=timeout_s))


# -- feeding and following -----------------------------------------------------------------------


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
    with Client(_settings(ctx), source="cli") as client:
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

    stopping = _stop_on_signals()
    with Client(_settings(ctx), source="watch") as client:
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
    with Client(_settings(ctx)) as client:
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


def _describe(record: Any) -> str:
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
    filters = SearchFilters(modality=Modality(modality) if modality else None, flagged=flagged, tenant=tenant)
    with Client(_settings(ctx)) as client:
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


# -- helpers -----------------------------------------------------------------------------


def _stop_on_signals() -> Callable[[], bool]:
    """Install SIGINT/SIGTERM handlers that ask the loop to stop; returns the check."""
    stop = {"requested": False}

    def handler(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: stop["requested"]


def _redacted(url: str | None) -> str:
    from shared.redis_client import redact_url

    return redact_url(url) if url else "?"


if __name__ == "__main__":  # pragma: no cover
    main()
