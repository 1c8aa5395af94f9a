from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from producers.bridge.stream_events import decode_fields, entry_time, event_from_entry, stream_upload_id
from shared.errors import InvalidEvent
from shared.events import Modality

ENTRY = "1715678467412-3"


def test_an_event_without_id_or_time_gets_both_from_its_entry_id() -> None:
    event = event_from_entry(ENTRY, {"event": json.dumps({"text": "a red bicycle", "source": "cms"})})

    assert event.id == "stream-1715678467412-3" == stream_upload_id(ENTRY)
    assert event.submitted_at == datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC)
    assert event.text == "a red bicycle"
    assert event.source == "cms"


def test_the_same_entry_read_twice_is_the_same_event() -> None:
    fields = {"event": json.dumps({"object": {"bucket": "uploads", "key": "a.jpg"}})}
    assert event_from_entry(ENTRY, fields) == event_from_entry(ENTRY, fields)


def test_the_callers_id_and_time_win() -> None:
    doc = {"id": "cms-42", "submitted_at": "2025-01-31T12:00:00Z", "text": "x", "modality": "text", "tenant": "acme"}
    event = event_from_entry(ENTRY, {"event": json.dumps(doc)})

    assert event.id == "cms-42"
    assert event.submitted_at == datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert event.modality is Modality.TEXT
    assert event.tenant == "acme"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"payload": "{}"}, "no 'event' field"),
        ({"event": "{not json"}, "not valid JSON"),
        ({"event": "[1, 2]"}, "JSON object"),
        ({"event": '{"text": "x", "object": {"bucket": "b", "key": "k"}}'}, "exactly one of"),
        ({"event": '{"version": "2", "text": "x"}'}, "major version"),
        ({"event": '{"id": "../etc", "text": "x"}'}, "id"),
        ({"event": '{"text": "x", "colour": "red"}'}, "colour"),
    ],
)
def test_bad_entries_are_invalid_events_that_say_why(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidEvent, match=problem) as caught:
        event_from_entry(ENTRY, fields)
    assert caught.value.reason == "invalid_event"


def test_fields_that_are_not_utf8_are_an_invalid_event() -> None:
    assert decode_fields({b"event": b'{"text": "caf\xc3\xa9"}'}) == {"event": '{"text": "café"}'}
    with pytest.raises(InvalidEvent, match="UTF-8"):
        decode_fields({b"event": b"\xff\xfe"})


def test_entry_time_refuses_what_is_not_a_stream_id() -> None:
    with pytest.raises(ValueError, match="stream entry id"):
        entry_time("abc")
