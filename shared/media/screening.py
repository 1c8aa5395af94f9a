"""Checks on an upload that sniffing alone does not make, applied by the CPU stage before any
decoder runs. Pure functions on bytes; each raises a `PermanentError` with its own reason.

- **Polyglots** (`check_not_polyglot`): a file that is a valid image or audio file *and* a
  ZIP/JAR archive (GIFAR, PNG+ZIP: ZIP readers find an archive by its end record, so
  appended archives stay valid), or a PNG with data after its ``IEND`` chunk (HTML, script
  or another file hidden behind the picture). Decoders ignore the extra bytes, but whoever
  serves the stored object later may not; such files are refused (``polyglot``). JPEG files
  may carry trailers legitimately (motion photos append a video), so only the archive test
  applies to them.
- **Disguises** (`check_declared_modality`): the declared content type is never trusted,
  and a mismatch within one modality (a PNG sent as ``image/jpeg``) is only recorded; but a
  declared type that names *another modality* than the content (HTML sent as
  ``image/png``, a JPEG sent as ``audio/wav``, SVG markup sent as ``image/svg+xml``) is
  refused (``content_type_mismatch``).
- **Why not text** (`explain_unsupported`): content that sniffing refuses but that is
  nearly text gets a precise reason: ``not_utf8`` for legacy 8-bit text, ``not_text`` for
  text with NUL bytes (often UTF-16 without a byte-order mark).
"""

from __future__ import annotations

import codecs

from shared.errors import UnsupportedMedia
from shared.events import Modality
from shared.media.sniff import TEXT_SNIFF_BYTES, Sniffed, looks_like_text

_ZIP_END = b"PK\x05\x06"
_ZIP_CENTRAL = b"PK\x01\x02"
_ZIP_END_BYTES = 22
_ZIP_MAX_COMMENT = 0xFFFF
_PNG_HEADER_BYTES = 8
# Trailing bytes after IEND that some encoders leave behind and that carry nothing.
_PADDING = b"\x00\r\n\t "
_TEXT_APPLICATION_MIMES = frozenset({"application/json", "application/xml", "application/x-ndjson", "application/yaml"})
# Share of printable characters (NULs left out) above which NUL-laden data is "text with NULs".
_PRINTABLE_FRACTION = 0.9


class Polyglot(UnsupportedMedia):
    reason = "polyglot"


class DeclaredTypeMismatch(UnsupportedMedia):
    reason = "content_type_mismatch"


def check_not_polyglot(data: bytes, sniffed: Sniffed) -> None:
    """Raise `Polyglot` if `data`, sniffed as `sniffed`, is also a ZIP archive or (PNG) has
    data after its end."""
    if sniffed.modality is Modality.TEXT:
        return  # text has no end marker and a ZIP end record is binary: not valid UTF-8 text
    if is_zip_archive(data):
        raise Polyglot(f"the {sniffed.format} file is also a ZIP archive (an appended archive or a disguised one)")
    if sniffed.format == "png":
        end = png_end(data)
        if end is not None and data[end:].strip(_PADDING):
            raise Polyglot(f"the PNG file has {len(data) - end} bytes of other data after its IEND chunk")


def is_zip_archive(data: bytes) -> bool:
    """True when a ZIP reader would open `data`: an end-of-central-directory record ends the
    file (after its comment) and a central directory entry sits where it says. The record's
    own cross-checks make a chance match in image or audio data practically impossible."""
    search_from = max(0, len(data) - _ZIP_END_BYTES - _ZIP_MAX_COMMENT)
    position = data.rfind(_ZIP_END, search_from)
    while position >= 0:
        if _is_zip_end_record(data, position):
            return True
        position = data.rfind(_ZIP_END, search_from, position)
    return False


def _is_zip_end_record(data: bytes, position: int) -> bool:
    record = data[position : position + _ZIP_END_BYTES]
    if len(record) < _ZIP_END_BYTES:
        return False
    entries = int.from_bytes(record[10:12], "little")
    directory_bytes = int.from_bytes(record[12:16], "little")
    comment_bytes = int.from_bytes(record[20:22], "little")
    if entries == 0 or position + _ZIP_END_BYTES + comment_bytes != len(data):
        return False
    directory_start = position - directory_bytes
    return directory_start >= 0 and data[directory_start : directory_start + 4] == _ZIP_CENTRAL


def png_end(data: bytes) -> int | None:
    """Offset just past the PNG's IEND chunk, or None when the chunk structure is broken
    before it (the decoder reports that)."""
    offset = _PNG_HEADER_BYTES
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        offset += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return offset if offset <= len(data) else None
    return None


def declared_modality(content_type: str | None) -> Modality | None:
    """The modality a declared content type claims, or None when it claims none
    (missing, generic, ``application/...``). Video types claim audio: omnibind reads
    video containers for their sound."""
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    family = mime.split("/", 1)[0]
    if family == "image":
        return Modality.IMAGE
    if family in ("audio", "video"):
        return Modality.AUDIO
    if family == "text" or mime in _TEXT_APPLICATION_MIMES:
        return Modality.TEXT
    return None


def check_declared_modality(declared: str | None, sniffed: Sniffed) -> None:
    """Raise `DeclaredTypeMismatch` when `declared` names another modality than the content."""
    claimed = declared_modality(declared)
    if sniffed.mismatch and claimed is not None and claimed is not sniffed.modality:
        raise DeclaredTypeMismatch(
            f"declared as {declared} ({claimed.value}) but the content is {sniffed.format} ({sniffed.modality.value})"
        )


def explain_unsupported(data: bytes, refused: UnsupportedMedia) -> UnsupportedMedia:
    """A more precise error than sniffing's ``unsupported_format`` for content that is
    nearly text; `refused` itself otherwise."""
    sample = data[:TEXT_SNIFF_BYTES]
    try:
        text = codecs.getincrementaldecoder("utf-8")(errors="strict").decode(sample, final=len(data) == len(sample))
    except UnicodeDecodeError:
        # Windows-1252 covers Latin-1's printable range and puts quotes, dashes and the euro
        # where Latin-1 has control codes, so 8-bit Western text reads as text either way.
        if looks_like_text(sample.decode("cp1252", errors="replace")):
            return UnsupportedMedia(
                "text is not UTF-8 (it looks like a legacy 8-bit encoding such as Latin-1 or Windows-1252); "
                "send UTF-8, or UTF-16 with a byte-order mark",
                reason="not_utf8",
            )
        return refused
    visible = text.replace("\0", "")
    if visible and sum(ch.isprintable() or ch.isspace() for ch in visible) >= _PRINTABLE_FRACTION * len(visible):
        return UnsupportedMedia(
            "text contains NUL bytes or control characters (UTF-16 without a byte-order mark?): not plain text",
            reason="not_text",
        )
    return refused
