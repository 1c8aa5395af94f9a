"""Review console sessions: signing in with an API key opens a session held in Redis, named
by a random token in an httpOnly, SameSite=Strict cookie. The key itself is never stored:
a session keeps the managed key's id (looked up again on every request, so a revoked key
ends its sessions within `auth.KEY_CACHE_S`) or, for a static operator key, its digest
(checked against the configured keys on every request). Each session has a CSRF token the
console sends back in ``X-CSRF-Token`` on every state change; a session expires after
``OMNIBIND_API__CONSOLE_IDLE_S`` without a request.

Signing in is protected against login CSRF (another site signing the browser in under the
attacker's key, so that what the moderator does lands in the attacker's account) as the
OWASP CSRF cheat sheet recommends for login forms, with a *pre-session*: the sign-in page
opens a short-lived session of its own (`LOGIN_COOKIE`, httpOnly, SameSite=Strict, only for
``/console/login``) whose CSRF token the form carries; the sign-in POST needs both, and an
``Origin`` header, when the browser sends one, naming this server. The pre-session ends at
sign-in and the real session gets a new token (no session fixation).

Redis: ``{prefix}:console:session:<sha256 of the token>`` (hash: kind, ref, csrf), with a
TTL renewed on each use; pre-sessions under ``{prefix}:console:login:`` (kind ``login``),
expiring after `LOGIN_TTL_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from shared.redis_client import translate_redis_errors

COOKIE = "omnibind_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_COOKIE = "omnibind_login"
LOGIN_TTL_S = 900.0  # how long a sign-in form may stay open


@dataclass(frozen=True, slots=True)
class Session:
    kind: str  # "managed" (ref = key id) | "static" (ref = digest hex)
    ref: str
    csrf: str

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SessionStore:
    def __init__(self, client: Callable[[], redis.Redis], prefix: str, *, idle_s: float, name: str = "session") -> None:
        self._client = client  # called on use: building the app does no I/O
        self._prefix = f"{prefix}:console:{name}:"  # name "login": the sign-in pre-sessions
        self.idle_s = idle_s

    def _key(self, token: str) -> str:
        return self._prefix + hashlib.sha256(token.encode()).hexdigest()

    def open(self, kind: str, ref: str) -> tuple[str, Session]:
        """A new session; returns its token (for the cookie) and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(kind, ref, secrets.token_urlsafe(32))
        with translate_redis_errors("opening a console session"):
            pipe = self._client().pipeline(transaction=True)
            pipe.hset(self._key(token), mapping={"kind": kind, "ref": ref, "csrf": session.csrf})
            pipe.pexpire(self._key(token), int(self.idle_s * 1000))
            pipe.execute()
        return token, session

    def get(self, token: str) -> Session | None:
        """The session of `token`, its idle time restarted; None when unknown or expired."""
        with translate_redis_errors("reading a console session"):
            pipe = self._client().pipeline(transaction=True)
            pipe.hgetall(self._key(token))
            pipe.pexpire(self._key(token), int(self.idle_s * 1000))
            raw: Any = pipe.execute()[0]
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return Session(fields["kind"], fields["ref"], fields["csrf"])

    def close(self, token: str) -> None:
        with translate_redis_errors("closing a console session"):
            self._client().delete(self._key(token))
