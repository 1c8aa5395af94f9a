"""Running omnibind: the embedded stack, production workers, health checks, the demo."""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from pathlib import Path

import click

from producers.cli.base import handle_errors, main, settings_of, stop_on_signals
from producers.client import Client
from producers.stack import WORKER_KINDS, Stack, settings_env, worker_argv
from shared.heartbeat import live_workers
from shared.models.catalog import CATALOG
from shared.redis_client import redact_url, resolve_redis_url

MODEL_NAMES = list(CATALOG)  # every loadable model; licences in docs/model.md


@main.command()
@click.option(
    "--model", type=click.Choice(MODEL_NAMES), default=None, help="tiny / pe-av-tiny = random weights, offline"
)
@click.option("--verbose", is_flag=True, help="relay the workers' output (Celery banners, warnings) to this terminal")
@click.pass_context
@handle_errors
def up(ctx: click.Context, model: str | None, verbose: bool) -> None:
    """Start the embedded stack: redis-server on loopback (data dir, AOF) plus cpu, gpu and
    index workers as child processes. Ctrl-C stops everything cleanly; a worker or a
    redis-server that dies is restarted (a worker that cannot start, or a redis-server that
    does not come back, stops everything with the reason). The workers' output goes to log
    files in DATA_DIR/logs (or, with --verbose, to this terminal)."""
    settings = settings_of(ctx)
    if model:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"name": model})})
    log_dir = None if verbose else settings.data_dir / "logs"
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, log_dir=log_dir)
    stopping = stop_on_signals()
    where = f", worker logs in {log_dir}" if log_dir else ""
    click.echo(f"starting omnibind (data dir {settings.data_dir}, model {settings.model.name}{where}) ...", err=True)
    with stack:
        redis_at = redact_url(stack.redis_url or "?")
        click.echo(f"omnibind is up: redis {redis_at}, workers {', '.join(stack.kinds)}. Ctrl-C stops.", err=True)
        while not stopping():
            time.sleep(1.0)
            stack.supervise_redis()
            stack.restart_dead()
        click.echo("stopping workers, then redis ...", err=True)


@main.command()
@click.pass_context
@handle_errors
def env(ctx: click.Context) -> None:
    """Print `export OMNIBIND_REDIS_URL=...` for the Redis this configuration uses (the
    embedded server of `omnibind up` when OMNIBIND_REDIS_URL is unset), password included, so
    that other tools reach it: eval "$(omnibind env)"; redis-cli -u "$OMNIBIND_REDIS_URL" ...
    (redis-cli does not decode a percent-encoded password: one with / ? # @ % or : needs -a)."""
    settings = settings_of(ctx)
    url = resolve_redis_url(settings)
    if settings.redis_url is None:
        # The embedded server's password belongs to its "default" user; redis-cli 6 sends an
        # empty user name (and fails) for the "redis://:password@" form.
        url = url.replace("redis://:", "redis://default:", 1)
    click.echo(f"export OMNIBIND_REDIS_URL={shlex.quote(url)}")
    click.echo(f"export OMNIBIND_QUEUE_PREFIX={shlex.quote(settings.queue_prefix)}")


@main.command()
@click.argument("kind", type=click.Choice(list(WORKER_KINDS)))
@click.pass_context
def worker(ctx: click.Context, kind: str) -> None:
    """Run one production worker process (cpu, gpu or index) in the foreground."""
    settings = settings_of(ctx)
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **settings_env(settings), "OMNIBIND_WORKER__KIND": kind}
    argv = worker_argv(kind, settings)  # type: ignore[arg-type]
    os.execvpe(argv[0], argv, env)


@main.command()
@click.option("--queue", "kind", type=click.Choice(list(WORKER_KINDS)), required=True)
@click.option("--any-host", is_flag=True, help="accept a live worker on any host (default: this host)")
@click.pass_context
@handle_errors
def health(ctx: click.Context, kind: str, any_host: bool) -> None:
    """Exit 0 if a worker of KIND on this host has a fresh heartbeat (container healthcheck)."""
    with Client(settings_of(ctx)) as client:
        beats = live_workers(client.redis, client.settings.queue_prefix, kind)
    mine = [b for b in beats if any_host or b.get("host") == socket.gethostname()]
    if not mine:
        raise click.ClickException(f"no live {kind} worker")
    click.echo(f"{len(mine)} live {kind} worker(s)")


@main.command()
@click.option("--model", type=click.Choice(MODEL_NAMES), default="huge", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="keep the demo's data here")
@click.option("--timeout", "timeout_s", type=float, default=900.0, show_default=True)
@click.pass_context
@handle_errors
def demo(ctx: click.Context, model: str, data_dir: Path | None, timeout_s: float) -> None:
    """Start the embedded stack, ingest the bundled samples (images, texts, audio), run a
    cross-modal search, shut down. Uses the real ImageBind checkpoint (downloaded once);
    --model tiny runs the same pipeline offline with a tiny random-weight model."""
    from producers.demo import run_demo

    sys.exit(run_demo(settings_of(ctx), model=model, data_dir=data_dir, timeout_s=timeout_s))
