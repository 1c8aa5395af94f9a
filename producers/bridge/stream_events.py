"""Entries of the ingest stream ``{prefix}:ingest`` -> UploadEvents (pure).

A producer in any language adds one entry per upload, with the UploadEvent v1 JSON
document (schema: ``shared/schemas/upload_event.v1.json``) in the field ``event``::

    XADD omnibind:ingest * event '{"text": "a red bicycle", "source": "cms"}'

Fields the producer leaves out are derived from the entry id, never from the clock, so an
entry delivered twice (the bridge died before acknowledging it) maps to the same upload:

* ``id`` -> ``stream-<entry id>`` (the producer knows it from XADD's reply);
* ``submitted_at`` -> the entry's time (the millisecond part of its id).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.errors import InvalidEvent
from shared.events import UploadEvent, parse_upload_event
from shared.json_limits import loads_bounded

EVENT_FIELD = "event"
STREAM_ID_PREFIX = "stream-"
_SHOWN_FIELDS = 5


def stream_upload_id(entry_id: str) -> str:
    """The upload id of an entry whose event names none: ``stream-<entry id>``."""
    return f"{STREAM_ID_PREFIX}{entry_id}"


def entry_time(entry_id: str) -> datetime:
    """When the entry was added: the milliseconds part of a stream id (``1700000000000-0``).

    Raises `ValueError` for something that is not a stream id.
    """
    millis, _, seq = entry_id.partition("-")
    if not (millis.isdigit() and seq.isdigit()):
        raise ValueError(f"not a stream entry id: {entry_id!r}")
    return datetime.fromtimestamp(int(millis) / 1000, UTC)


def decode_fields(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """Entry fields as text; bytes that are not UTF-8 raise `InvalidEvent` (names and values
    reach the bridge as raw bytes so one bad entry cannot break the read of a whole batch)."""
    decoded: dict[str, str] = {}
    for name, value in fields.items():
        try:
            key = name.decode() if isinstance(name, bytes) else name
            decoded[key] = value.decode() if isinstance(value, bytes) else value
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"stream entry field {name!r} is not UTF-8 text: {exc}") from exc
    return decoded


def event_from_entry(entry_id: str, fields: Mapping[str, str]) -> UploadEvent:
    """The UploadEvent in `fields` (already decoded, see `decode_fields`), with ``id`` and
    ``submitted_at`` derived from `entry_id` when absent.

    Raises `InvalidEvent` (reason ``invalid_event``) naming what is wrong: no ``event``
    field, not JSON, not an object, or an invalid UploadEvent (every bad field listed);
    `LimitExceeded` (``too_large``, ``too_deep``) for an event past `shared.json_limits`'
    limits, checked before it is parsed.
    """
    raw = fields.get(EVENT_FIELD)
    if raw is None:
        shown = ", ".join(sorted(fields)[:_SHOWN_FIELDS]) or "none"
        raise InvalidEvent(f"stream entry has no {EVENT_FIELD!r} field (its fields: {shown})")
    data: Any = loads_bounded(raw)
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(data).__name__}")
    defaults = {"id": stream_upload_id(entry_id), "submitted_at": entry_time(entry_id).isoformat()}
    return parse_upload_event({**defaults, **data})
