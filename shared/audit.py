"""The audit log: who did which admin action, when. ``omnibind audit`` reads it.

A Redis stream ``{prefix}:audit``, append-only: entries are added (`AuditLog.record`) and
never rewritten. Fields (all strings): ``v`` ("1"), ``action`` (e.g. ``key.create``),
``actor`` (``key:<key id>`` for a managed API key, ``key:static`` for an
``OMNIBIND_API__KEYS`` key, ``cli:<user>@<host>`` for the command line), ``target`` (what
the action was on: a key id, a tenant, an upload id, a blocklist entry), ``tenant`` (the
tenant concerned, empty when none), ``detail`` (a JSON object), ``at`` (ISO-8601 UTC).

Capped at about ``OMNIBIND_REDIS__AUDIT_MAXLEN`` entries (default 1,000,000, ~0.3 KB an
entry: ~300 MB at the cap; admin actions are rare, so that is years for most deployments).
Trimming is approximate (whole stream nodes) and drops the oldest entries first: to keep
an audit trail for longer, read the stream with a consumer group into durable storage.

Writers depend on the `AuditSink` port, not on Redis: code that changes something an
operator must be able to account for (keys, blocklist, decisions, dead-letter retries,
purges) takes a sink, so a route added elsewhere is audited the same way.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import redis
from pydantic import JsonValue

from shared.config import Settings
from shared.events import Frozen, utcnow
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.redis_replies import reply_text

AUDIT_VERSION = "1"
DEFAULT_MAXLEN = 1_000_000  # OMNIBIND_REDIS__AUDIT_MAXLEN's default
_PAGE = 500


class Action:
    """The action names written (a plain namespace: new actions need no schema change)."""

    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    BLOCKLIST_ADD = "blocklist.add"
    BLOCKLIST_REMOVE = "blocklist.remove"
    MODERATION_DECISION = "moderation.decision"
    MODERATION_RESCORE = "moderation.rescore"
    DEAD_LETTER_RETRY = "dead_letter.retry"
    TENANT_PURGE_START = "tenant.purge.start"
    TENANT_PURGE_DONE = "tenant.purge.done"


class AuditSink(Protocol):
    """Where admin actions are recorded. `record` raises `RedisUnavailable` (or its
    adapter's transient error): an action that cannot be audited should be reported."""

    def record(
        self,
        action: str,
        *,
        actor: str,
        target: str,
        tenant: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> str: ...


class AuditEntry(Frozen):
    entry_id: str
    action: str
    actor: str
    target: str
    tenant: str | None = None
    detail: dict[str, JsonValue]
    at: datetime


UNKNOWN_ACTOR = "unknown"  # a caller that named none (library use, tests)


def cli_actor() -> str:
    """The actor of a command-line action: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with an arbitrary uid)
        user = "?"
    return f"cli:{user}@{socket.gethostname()}"


def key_actor(key_id: str | None) -> str:
    """The actor of an HTTP request made with a managed key (`key_id`) or a static key (None)."""
    return f"key:{key_id}" if key_id else "key:static"


def parse_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> AuditEntry:
    decoded = {reply_text(k): reply_text(v) for k, v in fields.items()}
    return AuditEntry(
        entry_id=reply_text(entry_id),
        action=decoded.get("action", "?"),
        actor=decoded.get("actor", "?"),
        target=decoded.get("target", ""),
        tenant=decoded.get("tenant") or None,
        detail=json.loads(decoded.get("detail") or "{}"),
        at=decoded["at"],  # type: ignore[arg-type]  # pydantic parses the ISO string
    )


class AuditLog:
    """`AuditSink` on the Redis stream ``{prefix}:audit`` (module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, maxlen: int = DEFAULT_MAXLEN) -> None:
        self._redis = client
        self.key = RedisKeys(prefix).audit
        self.maxlen = maxlen

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> AuditLog:
        return cls(client, settings.queue_prefix, maxlen=settings.redis.audit_maxlen)

    def record(
        self,
        action: str,
        *,
        actor: str,
        target: str,
        tenant: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> str:
        """Append one entry; returns its id. Raises `RedisUnavailable`."""
        fields = {
            "v": AUDIT_VERSION,
            "action": action,
            "actor": actor,
            "target": target,
            "tenant": tenant or "",
            "detail": json.dumps(dict(detail or {}), sort_keys=True, default=str),
            "at": utcnow().isoformat().replace("+00:00", "Z"),
        }
        with translate_redis_errors(f"recording {action} in the audit log"):
            entry_id: Any = self._redis.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return reply_text(entry_id)

    def newest(
        self, *, limit: int = 50, action: str | None = None, tenant: str | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        """Up to `limit` entries, newest first; `action` matches a name or a prefix ending
        in ``.`` (``key.``), `tenant` and `actor` match exactly."""
        found: list[AuditEntry] = []
        upper = "+"
        while len(found) < limit:
            with translate_redis_errors("reading the audit log"):
                page: Any = self._redis.xrevrange(self.key, max=upper, count=_PAGE)
            for entry_id, fields in page:
                entry = parse_entry(entry_id, fields)
                if _matches(entry, action, tenant, actor):
                    found.append(entry)
                    if len(found) >= limit:
                        break
            if len(page) < _PAGE:
                break
            upper = f"({reply_text(page[-1][0])}"
        return found

    def length(self) -> int:
        with translate_redis_errors("reading the audit log"):
            return int(self._redis.xlen(self.key))  # type: ignore[arg-type]  # sync client


def _matches(entry: AuditEntry, action: str | None, tenant: str | None, actor: str | None) -> bool:
    if action is not None and not (
        entry.action == action or (action.endswith(".") and entry.action.startswith(action))
    ):
        return False
    return (tenant is None or entry.tenant == tenant) and (actor is None or entry.actor == actor)
