"""How the bridge classifies what goes wrong with one event.

`PermanentError` (the event itself is bad, or handling it hit a bug: `InternalError`) ->
dead letter with stage ``ingest``, then acknowledged: it never blocks the source.
`TransientError` (Redis or the broker down) -> the event stays where it is and is retried.
`ConfigError` (e.g. Redis refuses our password) -> the bridge stops.
"""

from __future__ import annotations

from shared.json_limits import MAX_EVENT_BYTES

DEAD_LETTER_STAGE = "ingest"


def kept_text(text: str) -> str:
    """What a dead letter keeps of an event: all of it, or its start when it is longer than
    any event can be (`MAX_EVENT_BYTES`): such an event can never be retried, and a copy of
    every oversized entry must not fill Redis."""
    return text if len(text) <= MAX_EVENT_BYTES else text[:MAX_EVENT_BYTES]
