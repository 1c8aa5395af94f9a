"""The record <-> flat properties mapping both backends store."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from shared.events import Moderation
from shared.vectors.properties import PROPERTY_NAMES, as_utc, properties_to_record, record_to_properties
from shared.vectors.records import VectorRecord

RecordFactory = Callable[..., VectorRecord]


def test_properties_round_trip_every_field(full_record: RecordFactory) -> None:
    record = full_record()
    properties = record_to_properties(record)
    assert tuple(properties) == PROPERTY_NAMES
    back = properties_to_record(properties, record.vector)
    assert back == VectorRecord(**{**_fields(record), "vector": back.vector})
    np.testing.assert_array_equal(back.vector, record.vector)


def _fields(record: VectorRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__slots__}  # type: ignore[attr-defined]


def test_moderation_is_stored_whole_and_as_flat_filterable_copies(full_record: RecordFactory) -> None:
    properties = record_to_properties(full_record())
    assert properties["flagged"] is True
    assert properties["categories"] == ["violence", "weapons"]
    assert properties["policy_version"] == "2025-03-01"
    assert json.loads(properties["moderation_json"])["scores"] == {"violence": 0.91, "weapons": 0.62, "nudity": 0.01}


def test_moderation_fields_this_version_does_not_know_are_ignored_on_read(full_record: RecordFactory) -> None:
    record = full_record()
    properties = record_to_properties(record)
    blob = json.loads(properties["moderation_json"])
    blob["appeal"] = {"state": "open"}  # fields a newer omnibind might add
    blob["reviewer_notes"] = ["weapon visible"]
    properties["moderation_json"] = json.dumps(blob)
    assert properties_to_record(properties, record.vector).moderation == record.moderation


def test_a_row_without_the_moderation_blob_reads_the_flat_copies(full_record: RecordFactory) -> None:
    record = full_record()
    properties = record_to_properties(record)
    properties["moderation_json"] = None
    assert properties_to_record(properties, record.vector).moderation == Moderation(
        flagged=True, categories=("violence", "weapons"), policy_version="2025-03-01"
    )


def test_timestamps_come_out_in_utc(make_record: RecordFactory) -> None:
    plus_two = timezone(timedelta(hours=2))
    record = make_record(created_at=datetime(2025, 1, 1, 14, 0, tzinfo=plus_two), indexed_at=datetime(2025, 1, 1, 12))
    properties = record_to_properties(record)
    assert properties["created_at"] == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert properties["indexed_at"] == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # naive means UTC
    assert properties["created_at"].tzinfo is UTC


def test_as_utc_reads_rfc3339_strings() -> None:
    assert as_utc("2025-03-04T05:06:07.5Z") == datetime(2025, 3, 4, 5, 6, 7, 500000, tzinfo=UTC)
    assert as_utc("2025-03-04T07:06:07+02:00") == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_the_vector_reads_back_as_float32_whatever_it_was_stored_as(make_record: RecordFactory) -> None:
    record = make_record()
    back = properties_to_record(record_to_properties(record), record.vector.astype(np.float64).tolist())
    assert back.vector.dtype == np.float32
    np.testing.assert_allclose(back.vector, record.vector, atol=1e-7)
