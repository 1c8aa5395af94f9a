"""The `omnibind` command group and what every command shares.

Configuration comes from OMNIBIND_* environment variables (docs/configuration.md); options only
override what a single command needs. Commands live in sibling modules, one per area, each
registering itself on `main`.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from producers.client import Client
from shared.config import Settings, load_settings
from shared.errors import ConfigError, OmnibindError
from shared.heartbeat import live_workers
from shared.logs import configure_logging
from shared.redis_client import redact_url, redis_client, resolve_redis_url

F = TypeVar("F", bound=Callable[..., Any])
# The one connection attempt a command makes before anything else waits no longer than this
# (an unreachable Redis is one clear line, not a storm of reconnection logs).
PREFLIGHT_CONNECT_TIMEOUT_S = 3.0
START_HINT = "start the embedded stack with `omnibind up`"


def settings_of(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def handle_errors(func: F) -> F:
    """Turn our own errors into one clear line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        except OmnibindError as exc:
            raise click.ClickException(f"{exc.reason}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def connect(ctx: click.Context, *, source: str = "cli") -> Client:
    """A `Client` for a command, after one bounded connection attempt to Redis without
    retries. Raises `click.ClickException` naming the server and the fix when it cannot be
    reached, instead of letting every call retry with backoff."""
    settings = settings_of(ctx)
    url = resolve_redis_url(settings)
    probe = redis_client(
        url, connect_timeout_s=min(settings.redis.connect_timeout_s, PREFLIGHT_CONNECT_TIMEOUT_S), retries=0
    )
    try:
        probe.ping()
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise click.ClickException(f"Redis at {redact_url(url)} refused our credentials ({exc})") from exc
    except redis.RedisError as exc:
        fix = START_HINT if settings.redis_url is None else "check OMNIBIND_REDIS_URL, or " + START_HINT
        raise click.ClickException(f"cannot reach Redis at {redact_url(url)} ({exc}): {fix}") from exc
    finally:
        probe.close()
    return Client(settings, source=source)


def require_workers(client: Client, kinds: tuple[str, ...], doing: str) -> None:
    """Raise `click.ClickException` at once when no worker of one of `kinds` is alive (by
    heartbeat), rather than let `doing` wait for workers that are not there."""
    alive = {str(beat["kind"]) for beat in live_workers(client.redis, client.settings.queue_prefix)}
    missing = [kind for kind in kinds if kind not in alive]
    if missing:
        raise click.ClickException(
            f"no live {', '.join(missing)} worker: {doing} needs {'/'.join(kinds)} workers; "
            f"{START_HINT} (or `omnibind worker KIND` against this Redis)"
        )


def stop_on_signals() -> Callable[[], bool]:
    """Install SIGINT/SIGTERM handlers that ask a loop to stop; returns the check."""
    stop = {"requested": False}

    def handler(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: stop["requested"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="omnibind", prog_name="omnibind")
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
    configure_logging(settings.log_level, settings.log_format)
    ctx.obj = {"settings": settings}
