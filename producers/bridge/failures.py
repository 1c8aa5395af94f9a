"""How the bridge classifies what goes wrong with one event.

`PermanentError` (the event itself is bad, or handling it hit a bug: `InternalError`) ->
dead letter with stage ``ingest``, then acknowledged: it never blocks the source.
`TransientError` (Redis or the broker down) -> the event stays where it is and is retried.
`ConfigError` (e.g. Redis refuses our password) -> the bridge stops.
"""

from __future__ import annotations

from shared.errors import PermanentError

DEAD_LETTER_STAGE = "ingest"


class InternalError(PermanentError):
    """An unexpected exception while handling one event (dead-lettered to retry after a fix)."""

    reason = "internal_error"
