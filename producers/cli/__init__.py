"""The `omnibind` command line. Each module registers its commands on `main`."""

from producers.cli import bridge, dead, keys, moderation, ops, reindex, serve, stack, tenant, uploads  # noqa: F401  (registers the commands)
from producers.cli.base import main

__all__ = ["main"]
