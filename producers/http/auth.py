"""API-key authentication and authorization.

A client sends a key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Two kinds
are accepted:

- managed keys (``omnibind keys create``, `shared.api_keys`): looked up in Redis by the id
  they carry, their digest compared in constant time. Each has tenants and roles. A
  lookup is cached in this process for `KEY_CACHE_S` at most, so a revoked key stops
  working on every API process within that time; the last use is recorded at most once
  per `TOUCH_EVERY_S` per key and process.
- static keys from ``OMNIBIND_API__KEYS`` (comma-separated, a secret): operator keys, every
  tenant and every role. Compared as SHA-256 digests with `hmac.compare_digest` against
  every configured key, so neither the time taken nor the order of the keys tells
  anything about a key.

The review console (`producers.http.console`) authenticates with a session cookie
instead (`producers.http.sessions`): the key it was opened with is checked again on every
request, and every state change must carry the session's CSRF token.

With neither a static key configured nor a managed key in Redis, authentication is off
and every request acts as an operator (`omnibind serve` refuses that unless bound to
loopback). Each route names the role it needs (`authorize`): a key without it gets 403.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from producers.http.errors import ApiError
from producers.http.sessions import COOKIE, CSRF_HEADER, SessionStore
from shared.api_keys import ApiKeyStore, KeyScope, Role, StoredKey, digest_of, key_id_of
from shared.errors import TransientError

log = logging.getLogger(__name__)

KEY_CACHE_S = 2.0  # a revoked key works at most this long on a process that just used it
TOUCH_EVERY_S = 60.0  # last-used times are this coarse
_CACHE_MAX_ENTRIES = 10_000

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API key>")


def parse_keys(raw: SecretStr | None) -> tuple[str, ...]:
    """The configured keys: comma-separated, surrounding whitespace dropped, empties ignored."""
    if raw is None:
        return ()
    return tuple(key.strip() for key in raw.get_secret_value().split(",") if key.strip())


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys, held as digests only."""

    digests: tuple[bytes, ...]

    @classmethod
    def from_secret(cls, raw: SecretStr | None) -> ApiKeys:
        return cls(tuple(digest_of(key) for key in parse_keys(raw)))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def accepts(self, candidate: str) -> bool:
        """True when `candidate` is one of the keys (constant time in the candidate)."""
        digest = digest_of(candidate)
        matched = False
        for expected in self.digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(digest, expected)
        return matched


class KeyResolver:
    """Turns a presented key into its `KeyScope` (see the module docstring). Thread-safe:
    FastAPI runs the dependencies of sync routes in a thread pool."""

    def __init__(
        self,
        static: ApiKeys,
        store: Callable[[], ApiKeyStore],
        *,
        cache_s: float = KEY_CACHE_S,
        touch_every_s: float = TOUCH_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = static
        self._store = store
        self._cache_s = cache_s
        self._touch_every_s = touch_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._found: dict[str, tuple[StoredKey | None, float]] = {}
        self._touched: dict[str, float] = {}
        self._managed_count: tuple[int, float] | None = None

    def enabled(self) -> bool:
        """True when any key exists: a static one, or a managed one (count cached briefly).
        Raises `RedisUnavailable` when only Redis could tell."""
        if self._static.enabled:
            return True
        now = self._clock()
        with self._lock:
            cached = self._managed_count
        if cached is None or now - cached[1] >= self._cache_s:
            cached = (self._store().count(), now)
            with self._lock:
                self._managed_count = cached
        return cached[0] > 0

    def resolve(self, candidate: str) -> KeyScope | None:
        """The scope of `candidate`, or None when it is no valid key."""
        key_id = key_id_of(candidate)
        if key_id is None:
            return KeyScope.operator() if self._static.accepts(candidate) else None
        stored = self._lookup(key_id)
        if stored is None or not stored.matches(candidate):
            return None
        self._touch(key_id)
        return stored.scope()

    def sign_in(self, candidate: str) -> tuple[str, str, KeyScope] | None:
        """What a console session keeps of `candidate` (kind and reference, never the key)
        and its scope; None when it is no valid key."""
        scope = self.resolve(candidate)
        if scope is None:
            return None
        key_id = key_id_of(candidate)
        if key_id is not None:
            return "managed", key_id, scope
        return "static", digest_of(candidate).hex(), scope

    def resolve_session(self, kind: str, ref: str) -> KeyScope | None:
        """The scope of a console session's key now: None once it was revoked (managed) or
        removed from the configuration (static)."""
        if kind == "static":
            digest = bytes.fromhex(ref)
            return KeyScope.operator() if any(hmac.compare_digest(digest, d) for d in self._static.digests) else None
        stored = self._lookup(ref)
        if stored is None:
            return None
        self._touch(ref)
        return stored.scope()

    def _lookup(self, key_id: str) -> StoredKey | None:
        now = self._clock()
        with self._lock:
            cached = self._found.get(key_id)
        if cached is not None and now - cached[1] < self._cache_s:
            return cached[0]
        stored = self._store().get(key_id)
        with self._lock:
            if len(self._found) >= _CACHE_MAX_ENTRIES:  # bounded: ids of garbage keys must not pile up
                self._found.clear()
            self._found[key_id] = (stored, now)
        return stored

    def _touch(self, key_id: str) -> None:
        now = self._clock()
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < self._touch_every_s:
                return
            if len(self._touched) >= _CACHE_MAX_ENTRIES:
                self._touched.clear()
            self._touched[key_id] = now
        try:
            self._store().touch(key_id, datetime.now(UTC))
        except TransientError:  # a missed last-used time must not fail the request
            log.warning("could not record the use of API key %s", key_id, exc_info=True)


def presented_key(bearer: HTTPAuthorizationCredentials | None, header_key: str | None) -> str | None:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    return header_key or None


def authorize(role: Role) -> Callable[..., KeyScope]:
    """A FastAPI dependency for a route that needs `role`: the caller's `KeyScope` (an
    operator's when authentication is off). Raises a 401 `ApiError` (``unauthorized``) for a
    missing or invalid key, 403 (``forbidden``) for a key without `role`."""

    def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
        header_key: Annotated[str | None, Security(header_scheme)],
    ) -> KeyScope:
        resolver: KeyResolver = request.app.state.key_resolver
        if not resolver.enabled():
            return KeyScope.operator()
        candidate = presented_key(bearer, header_key)
        scope: KeyScope | None
        if candidate is None and request.cookies.get(COOKIE):
            scope = session_scope(request, resolver)
        elif candidate is None:
            raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        else:
            scope = resolver.resolve(candidate)
        if scope is None:
            raise _unauthorized("invalid API key")
        if role not in scope.roles:
            raise ApiError(403, "forbidden", f"this API key lacks the role {role.value!r}")
        return scope

    dependency.__name__ = f"authorize_{role.value}"
    return dependency


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_scope(request: Request, resolver: KeyResolver) -> KeyScope:
    """The scope of the console session named by the request's cookie. Raises 401
    ``session_expired`` for an unknown or expired session (or a revoked key), 403
    ``csrf_failed`` for a state change without the session's CSRF token."""
    sessions: SessionStore = request.app.state.sessions
    session = sessions.get(request.cookies[COOKIE])
    scope = None if session is None else resolver.resolve_session(session.kind, session.ref)
    if session is None or scope is None:
        raise ApiError(401, "session_expired", "the console session ended: sign in again")
    if request.method not in SAFE_METHODS and not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise ApiError(403, "csrf_failed", f"a state change from the console needs the {CSRF_HEADER} header")
    return scope


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="omnibind"'})
