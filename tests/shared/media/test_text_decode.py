from __future__ import annotations

import codecs

import pytest

from shared.errors import CorruptMedia, LimitExceeded, UnsupportedMedia
from shared.media.text import check_text_length, decode_text

TEXT = "Grüße aus 東京 🌸\nline two"


@pytest.mark.parametrize(
    "data",
    [
        TEXT.encode(),
        codecs.BOM_UTF8 + TEXT.encode(),
        codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"),
        codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"),
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf32le-bom"],
)
def test_utf8_and_bom_marked_unicode_decode_without_their_mark(data: bytes) -> None:
    assert decode_text(data, max_chars=100) == TEXT


def test_legacy_encoding_is_refused_with_the_offending_byte() -> None:
    with pytest.raises(UnsupportedMedia) as err:
        decode_text("prix: 5 € café".encode("cp1252"), max_chars=100)
    assert err.value.reason == "not_utf8"
    assert "byte 8 " in err.value.message  # the euro sign, 0x80 in cp1252


def test_utf16_without_a_byte_order_mark_is_refused() -> None:
    with pytest.raises(UnsupportedMedia) as err:
        decode_text("hello".encode("utf-16-le"), max_chars=100)
    assert err.value.reason in {"not_utf8", "not_text"}


def test_nul_bytes_mean_binary_not_text() -> None:
    with pytest.raises(UnsupportedMedia) as err:
        decode_text(b"abc\x00def", max_chars=100)
    assert err.value.reason == "not_text"


def test_zero_bytes_are_an_empty_file() -> None:
    with pytest.raises(CorruptMedia) as err:
        decode_text(b"", max_chars=100)
    assert err.value.reason == "empty_file"


def test_character_limit_counts_characters_not_bytes() -> None:
    assert decode_text(("é" * 10).encode(), max_chars=10) == "é" * 10  # 20 bytes
    with pytest.raises(LimitExceeded) as err:
        decode_text(b"a" * 11, max_chars=10)
    assert err.value.reason == "text_too_long"


def test_far_oversized_text_is_refused_before_decoding() -> None:
    with pytest.raises(LimitExceeded) as err:
        decode_text(b"\xff" * 1000, max_chars=10)  # invalid UTF-8, but the size decides first
    assert err.value.reason == "text_too_long"


def test_inline_text_length_check() -> None:
    assert check_text_length("abc", max_chars=3) == "abc"
    with pytest.raises(LimitExceeded):
        check_text_length("abcd", max_chars=3)
