"""Redis replies as Python values: clients made with and without ``decode_responses``
answer ``str`` or ``bytes``, and the readers here accept both."""

from __future__ import annotations

from typing import Any


def reply_text(value: Any) -> str:
    """A reply (``bytes``, ``str`` or a number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
