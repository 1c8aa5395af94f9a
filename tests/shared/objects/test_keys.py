"""The naming rules, as pure functions: what is accepted, and that refusals say why."""

from __future__ import annotations

import re

import pytest

from shared.errors import InvalidKey, PermanentError
from shared.objects.keys import (
    DEFAULT_CONTENT_TYPE,
    validate_bucket,
    validate_content_type,
    validate_key,
    validate_metadata,
)


@pytest.mark.parametrize(
    "key",
    ["a", "dir/file.jpg", "with space.txt", "Ünïcödé/文件/🎉.png", ".hidden/..dots../...", "a" * 255],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


def test_a_key_of_exactly_1024_bytes_is_valid() -> None:
    key = "/".join(["é" * 127] * 4) + "/abcd"

    assert len(key.encode()) == 1024
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("   ", "whitespace"),
        ("../x", "'..' segment"),
        ("a/./b", "'.' segment"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\\b", "backslash"),
        ("nul\x00", "U+0000"),
        ("del\x7f", "U+007F"),
        ("c1\x9b", "U+009B"),
        ("x" * 1025, "1025 bytes"),
        ("é" * 513, "1026 bytes"),
        ("s" * 256, "longer than 255 bytes"),
        ("\udcff", "surrogate"),
    ],
)
def test_invalid_keys_are_refused_with_the_reason(key: str, problem: str) -> None:
    with pytest.raises(InvalidKey, match=re.escape(problem)) as caught:
        validate_key(key)

    assert caught.value.reason == "invalid_key"


def test_error_messages_escape_control_characters_and_stay_short() -> None:
    with pytest.raises(InvalidKey) as caught:
        validate_key("evil\nlog line" + "x" * 500 + "\x00")

    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("name", ["abc", "uploads", "my-bucket.v2", "0-9", "a" * 63])
def test_valid_bucket_names_are_returned_unchanged(name: str) -> None:
    assert validate_bucket(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ab", "3-63"),
        ("a" * 64, "3-63"),
        ("Uploads", "3-63"),
        ("under_score", "3-63"),
        ("-start", "starting and ending"),
        ("end.", "starting and ending"),
        (".omnibind-meta", "starting and ending"),
        ("a..b", "'..'"),
        ("a.-b", "'.-'"),
        ("10.0.0.1", "IP address"),
        ("xn--bucket", "reserves"),
        ("bucket-s3alias", "reserves"),
    ],
)
def test_invalid_bucket_names_are_refused_with_the_reason(name: str, problem: str) -> None:
    with pytest.raises(InvalidKey, match=re.escape(problem)):
        validate_bucket(name)


def test_missing_content_type_becomes_octet_stream() -> None:
    assert validate_content_type(None) == DEFAULT_CONTENT_TYPE == "application/octet-stream"


@pytest.mark.parametrize("content_type", ["image/jpeg", "text/plain; charset=utf-8", "application/vnd.api+json"])
def test_valid_content_types_are_returned_unchanged(content_type: str) -> None:
    assert validate_content_type(content_type) == content_type


def test_metadata_names_are_lower_cased_and_values_kept() -> None:
    assert validate_metadata({"Tenant": "Acme Corp", "upload_ID": "u-1"}) == {"tenant": "Acme Corp", "upload_id": "u-1"}


def test_no_metadata_is_an_empty_mapping() -> None:
    assert validate_metadata(None) == {}


def test_metadata_over_two_kib_is_refused() -> None:
    with pytest.raises(PermanentError, match="limit is 2048") as caught:
        validate_metadata({f"k{index}": "v" * 100 for index in range(20)})

    assert caught.value.reason == "invalid_metadata"
