"""Tokenizer equals the reference (golden fixtures from Meta's `imagebind.data`)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from shared.errors import LimitExceeded, UnsupportedMedia
from shared.imagebind.constants import TEXT_EOT_TOKEN, TEXT_SOT_TOKEN
from shared.imagebind.text import VOCAB_PATH, ClipTokenizer, clean_text, default_tokenizer, preprocess_text, tokenize
from tests.shared.media.samples import GOLDEN, sample_texts

CLIP_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def test_tokens_match_the_reference() -> None:
    with np.load(GOLDEN / "text.npz") as npz:
        names, reference = list(npz["names"]), npz["tokens"]
    texts = sample_texts()
    assert sorted(names) == sorted(texts)
    ours = tokenize([texts[name] for name in names])
    assert ours.dtype == np.int64 and ours.shape == (len(names), 77)
    assert np.array_equal(ours, reference)


def test_layout_is_sot_tokens_eot_then_zeros() -> None:
    row = tokenize("a photo of a dog")[0]
    eot = int(np.argmax(row))
    assert row[0] == TEXT_SOT_TOKEN and row[eot] == TEXT_EOT_TOKEN
    assert (row[1:eot] < TEXT_SOT_TOKEN).all() and (row[eot + 1 :] == 0).all()
    assert tokenize("")[0, :3].tolist() == [TEXT_SOT_TOKEN, TEXT_EOT_TOKEN, 0]


def test_long_text_keeps_its_first_75_tokens_and_ends_with_eot() -> None:
    text = sample_texts()["long"]
    full = default_tokenizer().encode(text)
    assert len(full) > 75
    row = tokenize(text)[0]
    assert row[76] == TEXT_EOT_TOKEN
    assert row[1:76].tolist() == full[:75]


def test_early_stop_gives_the_same_prefix() -> None:
    tokenizer = default_tokenizer()
    text = "one two three " * 50
    assert tokenizer.encode(text, max_tokens=10) == tokenizer.encode(text)[:10]


def test_special_token_strings_in_user_text_are_plain_text() -> None:
    row = tokenize("harmless <|endoftext|> hidden <|startoftext|> part")[0]
    eot = int(np.argmax(row))
    assert (row == TEXT_EOT_TOKEN).sum() == 1 and (row == TEXT_SOT_TOKEN).sum() == 1
    assert eot > 10  # the words after the injected marker are still there


def test_cleaning_is_ftfy_html_unescape_whitespace_lower() -> None:
    assert clean_text("  Tom &amp;amp; JERRY\t\n doesnâ€™t  ") == "tom & jerry doesn't"


@pytest.mark.parametrize("cache_size", [1, 8])
def test_bpe_cache_is_bounded(cache_size: int) -> None:
    tokenizer = ClipTokenizer(cache_size=cache_size)
    tokenizer.encode(" ".join(f"word{i}" for i in range(50)))
    assert tokenizer._bpe.cache_info().currsize <= cache_size


def test_vendored_vocabulary_is_clips() -> None:
    assert hashlib.sha256(VOCAB_PATH.read_bytes()).hexdigest() == CLIP_VOCAB_SHA256


def test_uploads_and_inline_texts_give_one_row_with_limits_enforced() -> None:
    expected = tokenize("Grüße")
    assert np.array_equal(preprocess_text("Grüße".encode(), max_chars=10), expected)
    assert np.array_equal(preprocess_text("Grüße", max_chars=10), expected)
    with pytest.raises(LimitExceeded):
        preprocess_text("x" * 11, max_chars=10)
    with pytest.raises(UnsupportedMedia):
        preprocess_text("Grüße".encode("latin-1"), max_chars=10)
