from __future__ import annotations

import json
import re

import pytest

from shared.errors import InvalidEvent, PermanentError
from shared.events import (
    SCHEMA_DIR,
    Modality,
    ObjectRef,
    UploadEvent,
    parse_upload_event,
    upload_event_json_schema,
)


def _event_json(**fields: object) -> str:
    doc: dict[str, object] = {"version": "1", "object": {"bucket": "uploads", "key": "a/b.jpg"}, "source": "test"}
    doc.update(fields)
    return json.dumps(doc)


def test_minimal_event_gets_generated_id_and_timestamp() -> None:
    event = parse_upload_event(_event_json())
    assert len(event.id) == 32
    assert event.object == ObjectRef(bucket="uploads", key="a/b.jpg")
    assert event.modality is Modality.AUTO
    assert event.submitted_at.tzinfo is not None


def test_minor_versions_are_accepted_and_unknown_major_versions_rejected_clearly() -> None:
    assert parse_upload_event(_event_json(version="1.3")).version == "1.3"
    with pytest.raises(InvalidEvent, match="unsupported UploadEvent major version '2'"):
        parse_upload_event(_event_json(version="2"))


def test_invalid_event_is_a_permanent_error_naming_the_field() -> None:
    with pytest.raises(PermanentError, match=r"object\.bucket"):
        parse_upload_event(_event_json(object={"bucket": "", "key": "k"}))


def test_event_needs_exactly_one_of_object_and_text() -> None:
    with pytest.raises(InvalidEvent, match="exactly one of"):
        parse_upload_event(json.dumps({"source": "t"}))
    with pytest.raises(InvalidEvent, match="exactly one of"):
        parse_upload_event(_event_json(text="hello"))
    assert parse_upload_event(json.dumps({"text": "héllo"})).text == "héllo"


def test_unknown_fields_and_unsafe_ids_are_rejected() -> None:
    with pytest.raises(InvalidEvent, match="colour"):
        parse_upload_event(_event_json(colour="red"))
    with pytest.raises(InvalidEvent, match="id"):
        parse_upload_event(_event_json(id="../../etc"))


def test_non_json_input_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        parse_upload_event(b"\xff{")


def test_events_are_frozen() -> None:
    event = UploadEvent(text="x")
    with pytest.raises(ValueError):
        event.id = "other"  # type: ignore[misc]


def test_published_json_schema_matches_the_model() -> None:
    published = json.loads((SCHEMA_DIR / "upload_event.v1.json").read_text())
    assert published == upload_event_json_schema(), "run `python -m shared.events` to regenerate"


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"map": "x" * 600 * 1024}, "the limit is 2048"),  # under the 1 MiB event cap of the JSON paths
        ({f"k{i}": "v" for i in range(65)}, "65 names; the limit is 64"),
        ({"n" * 129: "v"}, "1-128 characters"),
        ({"": "v"}, "1-128 characters"),
        ({"album": "é" * 1100}, "2205 bytes"),  # counted in UTF-8 bytes, not characters
    ],
)
def test_oversized_metadata_is_an_invalid_event_on_every_path(metadata: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(problem)):
        parse_upload_event(json.dumps({"text": "hello", "metadata": metadata}))  # ingest stream, bridge
    with pytest.raises(ValueError, match=re.escape(problem)):
        UploadEvent(text="hello", metadata=metadata)  # Python producers, HTTP


def test_a_six_megabyte_metadata_map_is_refused() -> None:
    # Once indexed whole (it came through Python, where no JSON size cap applies) and
    # returned by every search hit.
    with pytest.raises(ValueError, match="the limit is 2048"):
        UploadEvent(text="hello", metadata={"map": "x" * 6 * 1024 * 1024})


def test_metadata_up_to_the_limits_is_accepted() -> None:
    metadata = {f"k{i:02d}": "v" * 28 for i in range(64)}  # 64 x (3 + 28) = 1984 bytes
    assert UploadEvent(text="hello", metadata=metadata).metadata == metadata
