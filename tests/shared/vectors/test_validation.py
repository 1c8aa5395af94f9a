"""Checks applied before any write or search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from shared.errors import ConfigError, PermanentError
from shared.vectors.records import VectorRecord
from shared.vectors.validation import query_vector, records_dimension, unique_by_upload_id

RecordFactory = Callable[..., VectorRecord]


def test_the_last_record_of_an_upload_id_wins_in_write_order(make_record: RecordFactory) -> None:
    records = [make_record("a", tenant="1"), make_record("b"), make_record("a", tenant="2"), make_record("c")]
    unique = unique_by_upload_id(records)
    assert [r.upload_id for r in unique] == ["b", "a", "c"]
    assert unique[1].tenant == "2"


def test_an_empty_upload_id_is_a_permanent_error(make_record: RecordFactory) -> None:
    with pytest.raises(PermanentError) as caught:
        unique_by_upload_id([replace(make_record(), upload_id="")])
    assert caught.value.reason == "invalid_record"


def test_records_dimension_is_the_common_dimension(make_record: RecordFactory) -> None:
    records = [make_record(dim=48), make_record(dim=48)]
    assert records_dimension(records, None, store="s", hint="h") == 48
    assert records_dimension(records, 48, store="s", hint="h") == 48


def test_a_dimension_other_than_the_stores_names_both_and_the_remedy(make_record: RecordFactory) -> None:
    with pytest.raises(ConfigError) as caught:
        records_dimension([make_record(dim=32)], 1024, store="lancedb table 'uploads'", hint="use another table")
    message = str(caught.value)
    assert "dimension 32" in message and "dimension 1024" in message
    assert "lancedb table 'uploads'" in message and "use another table" in message


def test_integer_vectors_are_accepted_and_queries_come_out_float32() -> None:
    query = query_vector(np.arange(1, 5), 4, store="s", hint="h")
    assert query.dtype == np.float32 and query.flags.c_contiguous


@pytest.mark.parametrize(
    "vector",
    [np.array([np.inf, 1.0]), np.array(["a", "b"]), np.zeros(3), np.ones((1, 3))],
    ids=["inf", "strings", "zeros", "2d"],
)
def test_unusable_query_vectors_are_permanent_errors(vector: np.ndarray) -> None:
    with pytest.raises(PermanentError) as caught:
        query_vector(vector, None, store="s", hint="h")
    assert caught.value.reason == "invalid_vector"
