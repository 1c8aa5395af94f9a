"""API-key authentication.

Keys come from ``OMNIBIND_API__KEYS`` (comma-separated, a secret). A client sends one as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are compared as SHA-256
digests with `hmac.compare_digest` against every configured key, so neither the time taken
nor the order of the keys tells anything about a key. With no key configured
authentication is off (`omnibind serve` refuses that unless bound to loopback).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from producers.http.errors import ApiError

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API key>")


def parse_keys(raw: SecretStr | None) -> tuple[str, ...]:
    """The configured keys: comma-separated, surrounding whitespace dropped, empties ignored."""
    if raw is None:
        return ()
    return tuple(key.strip() for key in raw.get_secret_value().split(",") if key.strip())


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys, held as digests only."""

    digests: tuple[bytes, ...]

    @classmethod
    def from_secret(cls, raw: SecretStr | None) -> ApiKeys:
        return cls(tuple(_digest(key) for key in parse_keys(raw)))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def accepts(self, candidate: str) -> bool:
        """True when `candidate` is one of the keys (constant time in the candidate)."""
        digest = _digest(candidate)
        matched = False
        for expected in self.digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(digest, expected)
        return matched


def presented_key(bearer: HTTPAuthorizationCredentials | None, header_key: str | None) -> str | None:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    return header_key or None


def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    header_key: Annotated[str | None, Security(header_scheme)],
) -> None:
    """FastAPI dependency: pass when authentication is off or a valid key is presented;
    else raise a 401 `ApiError` (reason ``unauthorized``)."""
    keys: ApiKeys = request.app.state.api_keys
    if not keys.enabled:
        return
    candidate = presented_key(bearer, header_key)
    if candidate is None:
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    if not keys.accepts(candidate):
        raise _unauthorized("invalid API key")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="omnibind"'})
