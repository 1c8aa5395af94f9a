"""What the object store accepts: bucket names, object keys, content types and user metadata.

Pure functions; every adapter calls them on every operation, so a name that is refused by one
backend is refused by all of them, before any I/O happens. Each returns its (normalised)
argument or raises a `PermanentError` whose message names the problem.

Key rules (stricter than S3, so that a key means the same object on every backend and can be
mapped onto a file system without ever leaving its bucket):

- 1 to 1024 bytes of UTF-8, not only whitespace;
- segments separated by ``/``; no empty segment (so no leading or trailing ``/`` and no
  ``//``), no ``.`` or ``..`` segment, each segment at most 255 bytes (a file name's limit);
- no backslash, no control character (C0 including NUL, DEL, C1), no lone surrogate.

Anything else is fine: spaces, accents, CJK, emoji.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from shared.errors import InvalidKey, PermanentError

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_METADATA_BYTES = 2048  # S3's limit on user metadata (names + values, UTF-8)
MAX_METADATA_ENTRIES = 64
MAX_METADATA_NAME_CHARS = 128
MAX_CONTENT_TYPE_CHARS = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_METADATA_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
# Names the minio SDK sends as the HTTP header itself instead of X-Amz-Meta-<name>
# (`minio.helpers.normalize_headers`): a second Content-Type beside the one it sets breaks
# the request signature (SignatureDoesNotMatch, which reads as an access error and is
# retried), and the others would change how the object is served or stored. Expires is
# S3's own object header as well.
_HEADER_METADATA_NAMES = frozenset(
    {"cache-control", "content-disposition", "content-encoding", "content-language", "content-type", "expires"}
)
_HEADER_METADATA_PREFIX = "x-amz-"
_CONTENT_TYPE_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;[\x20-\x7e]*)?$")
_SHOWN_CHARS = 80


def _shown(value: str) -> str:
    """`value` for an error message: repr (control characters escaped), cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def validate_bucket(name: str) -> str:
    """Return `name` if it is a valid S3 bucket name, else raise `InvalidKey`.

    Rules: 3-63 characters of ``a-z 0-9 . -``, starting and ending with a letter or digit,
    no ``..``/``.-``/``-.``, not an IPv4 address, none of S3's reserved prefixes/suffixes.
    """
    if not isinstance(name, str) or not _BUCKET_RE.match(name):
        raise InvalidKey(
            f"bucket name {_shown(str(name))} is invalid: use 3-63 characters of a-z, 0-9, '.' and '-', "
            "starting and ending with a letter or digit"
        )
    for pair in ("..", ".-", "-."):
        if pair in name:
            raise InvalidKey(f"bucket name {_shown(name)} is invalid: it contains {pair!r}")
    if _IPV4_RE.match(name):
        raise InvalidKey(f"bucket name {_shown(name)} is invalid: it looks like an IP address")
    if name.startswith(_BUCKET_RESERVED_PREFIXES) or name.endswith(_BUCKET_RESERVED_SUFFIXES):
        raise InvalidKey(f"bucket name {_shown(name)} is invalid: it uses a prefix or suffix S3 reserves")
    return name


def validate_key(key: str) -> str:
    """Return `key` if it is a safe object key (see the module docstring), else raise
    `InvalidKey` naming the rule it breaks."""
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a string, not {type(key).__name__}")
    if not key or key.isspace():
        raise InvalidKey("object key is empty or only whitespace")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"object key {_shown(key)} is not valid Unicode (lone surrogate)") from exc
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    if "\\" in key:
        raise InvalidKey(f"object key {_shown(key)} contains a backslash")
    for char in key:
        if unicodedata.category(char) == "Cc":
            raise InvalidKey(f"object key {_shown(key)} contains the control character U+{ord(char):04X}")
    if key.startswith("/"):
        raise InvalidKey(f"object key {_shown(key)} is absolute (starts with '/')")
    for segment in key.split("/"):
        _check_segment(key, segment)
    return key


def _check_segment(key: str, segment: str) -> None:
    if not segment:
        raise InvalidKey(f"object key {_shown(key)} has an empty segment ('//' or a trailing '/')")
    if segment in (".", ".."):
        raise InvalidKey(f"object key {_shown(key)} has a {segment!r} segment")
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise InvalidKey(f"object key {_shown(key)} has a segment longer than {MAX_SEGMENT_BYTES} bytes")


def validate_content_type(content_type: str | None) -> str:
    """Return the content type to store (`DEFAULT_CONTENT_TYPE` for None), or raise
    `PermanentError` (reason ``invalid_metadata``) unless it is a ``type/subtype[; params]``
    string of printable ASCII (it travels as an HTTP header)."""
    if content_type is None:
        return DEFAULT_CONTENT_TYPE
    if len(content_type) > MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE_RE.match(content_type):
        raise PermanentError(
            f"content type {_shown(content_type)} is not a 'type/subtype' of printable ASCII",
            reason="invalid_metadata",
        )
    return content_type


def check_metadata_size(metadata: Mapping[str, str]) -> None:
    """The size rule every metadata map obeys — object metadata, upload events from any
    path (HTTP, ingest stream, bridge, Python), vector records: at most
    `MAX_METADATA_ENTRIES` names of 1-`MAX_METADATA_NAME_CHARS` characters, names plus values
    at most `MAX_METADATA_BYTES` in UTF-8 (which bounds each value too). Metadata travels in
    every message, status record and search hit of its upload, so it must stay small.
    Raises `PermanentError` (reason ``invalid_metadata``)."""
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise PermanentError(
            f"metadata has {len(metadata)} names; the limit is {MAX_METADATA_ENTRIES}", reason="invalid_metadata"
        )
    total = 0
    for name, value in metadata.items():
        if not 1 <= len(name) <= MAX_METADATA_NAME_CHARS:
            raise PermanentError(
                f"metadata name {_shown(name)} must be 1-{MAX_METADATA_NAME_CHARS} characters",
                reason="invalid_metadata",
            )
        total += len(name.encode("utf-8", "surrogatepass")) + len(str(value).encode("utf-8", "surrogatepass"))
    if total > MAX_METADATA_BYTES:
        raise PermanentError(
            f"metadata is {total} bytes (names + values, UTF-8); the limit is {MAX_METADATA_BYTES}",
            reason="invalid_metadata",
        )


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return user metadata with lower-cased names, or raise `PermanentError` (reason
    ``invalid_metadata``).

    Names: 1-128 of ``a-z 0-9 _ -`` after lower-casing (S3 metadata names are
    case-insensitive HTTP header names), and none of the standard object headers
    (content-type, cache-control, content-encoding, content-disposition, content-language,
    expires) or ``x-amz-*``: those are not user metadata to S3. Values: printable ASCII
    (headers cannot carry anything else portably). Names plus values: at most 2 KiB, as in S3.
    """
    normalised: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        lowered = str(name).lower()
        if not _METADATA_NAME_RE.match(lowered):
            raise PermanentError(
                f"metadata name {_shown(str(name))} is invalid: use 1-128 of a-z, 0-9, '_' and '-'",
                reason="invalid_metadata",
            )
        if lowered in _HEADER_METADATA_NAMES or lowered.startswith(_HEADER_METADATA_PREFIX):
            raise PermanentError(
                f"metadata name {_shown(str(name))} is reserved: it is an object header, not user metadata",
                reason="invalid_metadata",
            )
        if not isinstance(value, str) or not all(" " <= char <= "~" for char in value):
            raise PermanentError(
                f"metadata value for {lowered!r} must be printable ASCII text", reason="invalid_metadata"
            )
        if lowered in normalised:
            raise PermanentError(f"metadata name {lowered!r} is given twice", reason="invalid_metadata")
        normalised[lowered] = value
    check_metadata_size(normalised)
    return normalised
