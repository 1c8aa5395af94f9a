"""JSON from untrusted producers, parsed only within limits of size and nesting (pure).

Python's `json` has no depth limit: a document of 100,000 nested brackets raises
`RecursionError` (and a deeper one can exhaust the C stack), which is not a `ValueError`,
so every ``try: json.loads(...) except ValueError`` lets it escape and kill the caller. Here
the size is checked first, then the nesting depth by a scan of the raw text (linear, no
recursion), and only then is the text parsed; `RecursionError` is still caught as a last
resort. Every refusal is a `PermanentError` with a stable reason: ``too_large``,
``too_deep`` (`LimitExceeded`) or ``invalid_event`` (`InvalidEvent`: not UTF-8, not JSON).
"""

from __future__ import annotations

import json
import re
from typing import Any

from shared.errors import InvalidEvent, LimitExceeded

MAX_JSON_DEPTH = 32
"""Deepest nesting accepted. An UploadEvent nests 2 levels (``object``, ``metadata``), a
MinIO notification 5 (``[{"Event": [{"s3": {"object": {"userMetadata": ...``), an HTTP
request body no more than 3: 32 leaves room for any legitimate document."""

MAX_EVENT_BYTES = 1024 * 1024
"""Largest event document a producer may put on the ingest stream or MinIO's notification
list, in bytes (UTF-8). The largest legal UploadEvent (20,000 characters of inline text at up
to 12 bytes each when \\u-escaped, plus metadata) is a quarter of it; the HTTP API's JSON
bodies have the same default limit (``OMNIBIND_API__MAX_JSON_BYTES``)."""

# A JSON string (possessive, so never backtracking: an unterminated one runs to the end of the
# text, which is then unparsable anyway) or one bracket: brackets inside strings do not nest.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?|[\[\]{}]', re.DOTALL)


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether `text` (JSON or not) opens more than `max_depth` brackets at once, brackets
    inside JSON strings not counted. Linear in `text`; stops at the first bracket too deep."""
    if text.count("[") + text.count("{") <= max_depth:
        return False  # the common case: too few brackets to reach the limit at all
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads_bounded(
    raw: bytes | str, *, max_bytes: int | None = MAX_EVENT_BYTES, max_depth: int = MAX_JSON_DEPTH, what: str = "event"
) -> Any:
    """`raw` parsed as JSON, if it is at most `max_bytes` long (None: no size limit; text
    counts as its UTF-8 length) and nests at most `max_depth` deep.

    Raises `LimitExceeded` (reason ``too_large`` or ``too_deep``) or `InvalidEvent` (reason
    ``invalid_event``: not UTF-8, not JSON), each naming `what`.
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode(errors="surrogatepass"))
    if max_bytes is not None and size > max_bytes:
        raise LimitExceeded(f"{what} is {size} bytes; the limit is {max_bytes}", reason="too_large")
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"{what} is not valid JSON: not UTF-8 text ({exc})") from exc
    if nesting_exceeds(text, max_depth):
        raise LimitExceeded(f"{what} nests deeper than {max_depth} levels", reason="too_deep")
    try:
        return json.loads(text)
    except RecursionError as exc:  # last resort: the scan above should have refused it
        raise LimitExceeded(f"{what} nests too deeply to parse", reason="too_deep") from exc
    except ValueError as exc:
        raise InvalidEvent(f"{what} is not valid JSON: {exc}") from exc
