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

from shared.config import Settings, load_settings
from shared.errors import ConfigError, OmnibindError
from shared.logs import configure_logging

F = TypeVar("F", bound=Callable[..., Any])


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


def stop_on_signals() -> Callable[[], bool]:
    """Install SIGINT/SIGTERM handlers that ask a loop to stop; returns the check."""
    stop = {"requested": False}

    def handler(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: stop["requested"]


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
    configure_logging(settings.log_level, settings.log_format)
    ctx.obj = {"settings": settings}
