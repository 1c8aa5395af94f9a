"""Text -> ImageBind text input: 77 CLIP BPE token ids.

A port of the CLIP tokenizer that ImageBind uses (`SimpleTokenizer`; OpenAI CLIP, MIT
licence, see ``assets/LICENSE-CLIP``): ftfy + HTML-unescape (twice) + whitespace clean +
lower case, CLIP's pre-tokenising regex, byte-level BPE over ``bpe_simple_vocab_16e6``,
``[SOT] + tokens`` cut to 76 then ``[EOT]`` appended, zero-padded to 77.

Deliberate differences from the reference, neither of which changes ordinary text:
- The literal strings ``<|startoftext|>`` / ``<|endoftext|>`` in user text are ordinary
  characters here, not special tokens. The text model pools at the first EOT id, so an
  injected one would hide everything after it (from moderation, among others).
- The BPE cache is a bounded LRU (the reference's dict grows with every new word).
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
from collections.abc import Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex

from shared.imagebind.constants import TEXT_CONTEXT_LENGTH, TEXT_EOT_TOKEN, TEXT_SOT_TOKEN, TEXT_VOCAB_SIZE
from shared.media.text import check_text_length, decode_text

VOCAB_PATH = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
BPE_CACHE_SIZE = 65_536
# CLIP's pattern without its first two alternatives (the special-token strings).
_WORD_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
_WHITESPACE = regex.compile(r"\s+")
_END_OF_WORD = "</w>"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character map (BPE works on characters, and
    whitespace/control bytes must not appear in merge rules)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def clean_text(text: str) -> str:
    """The reference's normalisation: ftfy, HTML entities unescaped twice, whitespace runs
    collapsed to one space, stripped, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class ClipTokenizer:
    """The CLIP BPE tokenizer. Build it once (loading the vocabulary takes ~0.3 s) and share
    it: `encode` and `tokenize` are thread-safe."""

    def __init__(self, vocab_path: Path = VOCAB_PATH, *, cache_size: int = BPE_CACHE_SIZE) -> None:
        with gzip.open(vocab_path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        # Line 0 is a header; CLIP uses the first 49152 - 256 - 2 merges.
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + _END_OF_WORD for c in byte_chars] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        if len(self.encoder) != TEXT_VOCAB_SIZE or self.encoder["<|endoftext|>"] != TEXT_EOT_TOKEN:
            raise ValueError(f"{vocab_path} is not the CLIP vocabulary ({len(self.encoder)} entries)")
        self._ranks: dict[tuple[str, str], int] = {(m[0], m[1]): i for i, m in enumerate(merges)}
        self._byte_encoder = bytes_to_unicode()
        self._bpe = functools.lru_cache(maxsize=cache_size)(self._merge)

    def encode(self, text: str, *, max_tokens: int | None = None) -> list[int]:
        """BPE token ids of `text` (cleaned first), without SOT/EOT; stops early once
        `max_tokens` ids exist (the result is then cut to exactly that many)."""
        ids: list[int] = []
        for word in _WORD_PATTERN.findall(clean_text(text)):
            chars = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(chars).split(" "))
            if max_tokens is not None and len(ids) >= max_tokens:
                return ids[:max_tokens]
        return ids

    def tokenize(self, texts: str | Sequence[str], context_length: int = TEXT_CONTEXT_LENGTH) -> np.ndarray:
        """Texts -> int64 array (N, context_length): SOT, up to context_length - 2 BPE ids,
        EOT, zeros. An over-long text keeps its first ids and still ends with EOT."""
        if isinstance(texts, str):
            texts = [texts]
        result = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [TEXT_SOT_TOKEN, *self.encode(text, max_tokens=context_length - 2), TEXT_EOT_TOKEN]
            result[row, : len(tokens)] = tokens
        return result

    def _merge(self, word: str) -> str:
        """Apply BPE merges to one pre-token (byte characters); returns the pieces joined
        by spaces, the last one carrying the end-of-word marker."""
        symbols = [*word[:-1], word[-1] + _END_OF_WORD]
        while len(symbols) > 1:
            pairs = set(itertools.pairwise(symbols))
            best = min(pairs, key=lambda pair: self._ranks.get(pair, len(self._ranks)))
            if best not in self._ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return " ".join(symbols)


@functools.cache
def default_tokenizer() -> ClipTokenizer:
    """The process-wide tokenizer over the vendored vocabulary, built on first use."""
    return ClipTokenizer()


def tokenize(texts: str | Sequence[str]) -> np.ndarray:
    """Texts -> int64 (N, 77) token ids, as ImageBind's text encoder expects them."""
    return default_tokenizer().tokenize(texts)


def preprocess_text(data: bytes | str, *, max_chars: int) -> np.ndarray:
    """A text upload (bytes, decoded strictly) or an inline text -> int64 (1, 77).

    Raises what `shared.media.text.decode_text` raises for bytes, and `LimitExceeded`
    (``text_too_long``) for either beyond `max_chars`.
    """
    if isinstance(data, bytes):
        text = decode_text(data, max_chars=max_chars)
    else:
        text = check_text_length(data, max_chars=max_chars)
    return tokenize(text)
