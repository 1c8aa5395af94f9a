"""The ``Omnibind-Signature`` header of a webhook request (pure).

Format: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``. The timestamp
is signed with the body, so a receiver that rejects timestamps older than a few minutes
cannot be fed a captured request again (replay). Every attempt is signed anew: a retried
delivery carries a fresh timestamp.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Omnibind-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def _digest(secret: str | bytes, timestamp_s: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp_s: int) -> str:
    """The header value for `body` sent at `timestamp_s`."""
    return f"t={timestamp_s},{SCHEME}={_digest(secret, timestamp_s, body)}"


def verify_signature(
    secret: str | bytes, header: str, body: bytes, *, now_s: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    """True when `header` signs exactly `body` with `secret` and its timestamp is within
    `tolerance_s` of `now_s`. Several ``v1=`` values are accepted (secret rotation)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures or abs(now_s - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
