"""Text upload bytes -> `str`, strictly.

UTF-8 (with or without a byte-order mark) is the default; UTF-16 and UTF-32 are accepted
only with a BOM. Legacy 8-bit encodings are not guessed: statistical detectors are wrong
often enough on short texts that embedding mojibake silently is worse than a clear
rejection.
"""

from __future__ import annotations

from shared.errors import CorruptMedia, LimitExceeded, UnsupportedMedia
from shared.media.sniff import looks_like_text, text_encoding


def decode_text(data: bytes, *, max_chars: int) -> str:
    """Decode a text upload.

    Takes the raw bytes and the largest number of characters accepted. Returns the text
    without its BOM. Raises `CorruptMedia` (``empty_file``) for zero bytes,
    `UnsupportedMedia` (``not_utf8``) for bytes that are not valid in the encoding their
    BOM names (UTF-8 without one), `UnsupportedMedia` (``not_text``) for NULs or many
    control characters, and `LimitExceeded` (``text_too_long``) beyond `max_chars`.
    """
    if not data:
        raise CorruptMedia("the text upload is empty (0 bytes)", reason="empty_file")
    encoding, bom_length = text_encoding(data)
    # No encoding we read spends more than 4 bytes on a character, so a far oversized upload
    # is refused before decoding it.
    if len(data) - bom_length > 4 * max_chars:
        raise LimitExceeded(
            f"text has at least {(len(data) - bom_length) // 4} characters; the limit is {max_chars}",
            reason="text_too_long",
        )
    try:
        text = data[bom_length:].decode(encoding, errors="strict")
    except UnicodeDecodeError as exc:
        offending = exc.object[exc.start : exc.start + 4]
        raise UnsupportedMedia(
            f"text is not valid {encoding.upper()}: byte {exc.start + bom_length} ({offending!r}) cannot be decoded; "
            "send UTF-8 (or UTF-16 with a byte-order mark)",
            reason="not_utf8",
        ) from exc
    check_text_length(text, max_chars=max_chars)
    if not looks_like_text(text):
        raise UnsupportedMedia("the upload contains NUL bytes or control characters: not plain text", reason="not_text")
    return text


def check_text_length(text: str, *, max_chars: int) -> str:
    """Return `text` if it has at most `max_chars` characters, else raise `LimitExceeded`
    (``text_too_long``). For inline texts that never were bytes."""
    if len(text) > max_chars:
        raise LimitExceeded(f"text has {len(text)} characters; the limit is {max_chars}", reason="text_too_long")
    return text
