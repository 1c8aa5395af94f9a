from __future__ import annotations

import json

import pytest

from shared.errors import InvalidEvent, LimitExceeded
from shared.json_limits import MAX_JSON_DEPTH, loads_bounded, nesting_exceeds


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_up_to_the_limit_is_parsed_and_one_more_level_is_refused_as_too_deep() -> None:
    assert loads_bounded(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    with pytest.raises(LimitExceeded) as refused:
        loads_bounded(nested(MAX_JSON_DEPTH + 1))
    assert refused.value.reason == "too_deep"


def test_brackets_inside_strings_and_escaped_quotes_do_not_count_as_nesting() -> None:
    text = json.dumps({"text": "[" * 1000 + '\\" {{{' + "\\\\", "metadata": {"a": "]]]" * 500}})
    assert not nesting_exceeds(text, 2)
    assert loads_bounded(text)["metadata"]["a"] == "]]]" * 500
    assert nesting_exceeds('{"a": "\\\\"' + ", " + nested(3) + "}", 3), "an escaped backslash ends no string"


def test_a_hundred_thousand_nested_brackets_are_refused_without_parsing() -> None:
    with pytest.raises(LimitExceeded) as refused:
        loads_bounded(nested(100_000).encode())
    assert refused.value.reason == "too_deep"


def test_an_unterminated_string_full_of_escaped_quotes_is_scanned_in_linear_time() -> None:
    # Each quote could start a string; a backtracking scanner would take quadratic time here.
    assert not nesting_exceeds('"' + '\\"[' * 200_000, MAX_JSON_DEPTH)


def test_size_is_checked_before_anything_else_in_utf8_bytes() -> None:
    with pytest.raises(LimitExceeded) as refused:
        loads_bounded('"' + "é" * 600 + '"', max_bytes=1000)
    assert refused.value.reason == "too_large" and "1202 bytes" in refused.value.message


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", "not json", '{"a": ', b""])
def test_text_that_is_not_utf8_json_is_an_invalid_event(raw: bytes | str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        loads_bounded(raw)
    assert refused.value.reason == "invalid_event"
