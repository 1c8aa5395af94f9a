"""API keys with scope: which tenants a key may act for and which roles it holds.

A managed key is created by ``omnibind keys create`` and shown once:
``obk_<key id>_<secret>`` (the id is 16 hex digits, the secret 256 random bits). Redis
keeps only its SHA-256 digest, in the hash ``{prefix}:api_keys`` (field: the key id, value:
a `StoredKey` as JSON); the time each key was last used is in ``{prefix}:api_keys:last_used``.
A presented key is looked up by the id it carries and its digest compared with
`hmac.compare_digest`, so neither the time taken nor an error tells anything about the
secret. Revoking a key deletes its field. Creating and revoking a key are recorded in the
audit log (`shared.audit`) with the actor the caller names.

Static keys from ``OMNIBIND_API__KEYS`` (the only keys before scopes existed) are operator
keys: every tenant, every role.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from shared.audit import UNKNOWN_ACTOR, Action, AuditLog, AuditSink
from shared.redis_client import translate_redis_errors
from shared.redis_replies import reply_text
from shared.vectors.records import ALL_TENANTS, TenantScope

KEY_PREFIX = "obk"
OPERATOR_TENANTS = "*"
# A tenant a key names: no ':' (it separates the tenant from the id in an upload id) and no
# '/' (object keys), at most 64 characters so that a qualified upload id fits in 128.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TENANT_RE = re.compile(TENANT_PATTERN)
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class Role(StrEnum):
    """What a key may do. See docs/http_api.md for the routes each role opens."""

    INGEST = "ingest"  # submit uploads
    SEARCH = "search"  # search the indexed uploads
    READ = "read"  # follow uploads (status records)
    MODERATE = "moderate"  # the review queue and moderation decisions
    ADMIN = "admin"  # pipeline-wide views: /metrics


ALL_ROLES = frozenset(Role)


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def check_tenant(name: str) -> str:
    """`name` if it is a valid tenant name (`TENANT_PATTERN`), else raise `ValueError`."""
    if not _TENANT_RE.match(name):
        raise ValueError(
            f"invalid tenant {name!r}: 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return name


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Role names (comma-separated parts allowed) as roles; raise `ValueError` for unknown ones."""
    roles: set[Role] = set()
    for part in names:
        for name in (piece.strip() for piece in part.split(",")):
            if not name:
                continue
            try:
                roles.add(Role(name))
            except ValueError as exc:
                known = ", ".join(role.value for role in Role)
                raise ValueError(f"unknown role {name!r} (known: {known})") from exc
    if not roles:
        raise ValueError("a key needs at least one role")
    return frozenset(roles)


def parse_tenants(names: Iterable[str]) -> TenantScope:
    """Tenant names (comma-separated parts allowed), or ``*`` alone for every tenant; raise
    `ValueError` for an invalid name, none, or ``*`` mixed with names."""
    found = {piece.strip() for part in names for piece in part.split(",") if piece.strip()}
    if OPERATOR_TENANTS in found:
        if len(found) > 1:
            raise ValueError("'*' (every tenant) cannot be combined with tenant names")
        return ALL_TENANTS
    if not found:
        raise ValueError("a key needs a tenant (or '*' for every tenant)")
    return frozenset(check_tenant(name) for name in found)


@dataclass(frozen=True, slots=True)
class KeyScope:
    """What the caller of one request may do: its tenants and roles. `key_id` is None for a
    static key (and when authentication is off)."""

    tenants: TenantScope
    roles: frozenset[Role]
    key_id: str | None = None

    @classmethod
    def operator(cls) -> KeyScope:
        return cls(ALL_TENANTS, ALL_ROLES)

    @property
    def all_tenants(self) -> bool:
        return self.tenants is ALL_TENANTS

    @property
    def single_tenant(self) -> str | None:
        """The key's tenant when it has exactly one."""
        if self.tenants is ALL_TENANTS or len(self.tenants) != 1:
            return None
        (only,) = self.tenants
        return only

    def covers(self, tenant: str | None) -> bool:
        """True when the key may act for `tenant` (None: no tenant, operators only)."""
        if self.tenants is ALL_TENANTS:
            return True
        return tenant is not None and tenant in self.tenants


class StoredKey(BaseModel):
    """What Redis keeps of a managed key (never the key itself)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = 1
    key_id: str
    digest: str = Field(description="hex SHA-256 of the whole key")
    tenants: list[str] = Field(description="tenant names, or ['*'] for every tenant")
    roles: list[Role]
    created_at: datetime

    def scope(self) -> KeyScope:
        tenants: TenantScope = ALL_TENANTS if self.tenants == [OPERATOR_TENANTS] else frozenset(self.tenants)
        return KeyScope(tenants, frozenset(self.roles), self.key_id)

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(digest_of(key), bytes.fromhex(self.digest))


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A managed key as `omnibind keys list` shows it (no secret, no digest)."""

    key_id: str
    tenants: tuple[str, ...]
    roles: tuple[Role, ...]
    created_at: datetime
    last_used_at: datetime | None


def key_id_of(key: str) -> str | None:
    """The id a managed key carries, or None when `key` does not look like one."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not secret or not _KEY_ID_RE.match(key_id):
        return None
    return key_id


class ApiKeyStore:
    """Managed API keys in Redis (see the module docstring). Every method raises
    `RedisUnavailable` when Redis cannot be reached."""

    def __init__(self, client: redis.Redis, prefix: str, *, audit: AuditSink | None = None) -> None:
        self._redis = client
        self._audit = audit or AuditLog(client, prefix)
        self._keys = f"{prefix}:api_keys"
        self._last_used = f"{prefix}:api_keys:last_used"

    def create(
        self, tenants: TenantScope, roles: frozenset[Role], *, actor: str = UNKNOWN_ACTOR
    ) -> tuple[StoredKey, str]:
        """Create a key (audited as `actor`'s); returns what is stored and the key (the only
        time it exists in the clear)."""
        if not roles:
            raise ValueError("a key needs at least one role")
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        names = [OPERATOR_TENANTS] if tenants is ALL_TENANTS else sorted(tenants)
        stored = StoredKey(
            key_id=key_id,
            digest=digest_of(key).hex(),
            tenants=names,
            roles=sorted(roles),
            created_at=datetime.now(UTC),
        )
        with translate_redis_errors("creating an API key"):
            added = self._redis.hsetnx(self._keys, key_id, stored.model_dump_json())
        if not added:  # 64 random bits collided: astronomically unlikely, but never overwrite
            return self.create(tenants, roles, actor=actor)
        self._audit.record(
            Action.KEY_CREATE,
            actor=actor,
            target=key_id,
            tenant=names[0] if len(names) == 1 and names[0] != OPERATOR_TENANTS else None,
            detail={"tenants": names, "roles": [role.value for role in stored.roles]},
        )
        return stored, key

    def get(self, key_id: str) -> StoredKey | None:
        with translate_redis_errors("reading an API key"):
            raw: Any = self._redis.hget(self._keys, key_id)
        return None if raw is None else StoredKey.model_validate_json(raw)

    def revoke(self, key_id: str, *, actor: str = UNKNOWN_ACTOR) -> bool:
        """Delete the key (audited as `actor`'s); False when there was none of that id."""
        stored = self.get(key_id)
        with translate_redis_errors("revoking an API key"):
            pipe = self._redis.pipeline()
            pipe.hdel(self._keys, key_id)
            pipe.hdel(self._last_used, key_id)
            removed, _ = pipe.execute()
        if removed:
            names = stored.tenants if stored is not None else []
            single = names[0] if len(names) == 1 and names[0] != OPERATOR_TENANTS else None
            self._audit.record(Action.KEY_REVOKE, actor=actor, target=key_id, tenant=single, detail={"tenants": names})
        return bool(removed)

    def count(self) -> int:
        with translate_redis_errors("counting API keys"):
            return int(self._redis.hlen(self._keys))  # type: ignore[arg-type]  # sync client

    def touch(self, key_id: str, when: datetime) -> None:
        """Record that the key was used at `when`."""
        with translate_redis_errors("recording an API key's use"):
            self._redis.hset(self._last_used, key_id, when.isoformat())

    def list(self) -> list[KeyInfo]:
        """Every managed key, oldest first."""
        with translate_redis_errors("listing API keys"):
            raw_keys: Any = self._redis.hgetall(self._keys)
            raw_used: Any = self._redis.hgetall(self._last_used)
        used = {reply_text(k): datetime.fromisoformat(reply_text(v)) for k, v in raw_used.items()}
        infos = []
        for raw in raw_keys.values():
            stored = StoredKey.model_validate_json(raw)
            infos.append(
                KeyInfo(
                    stored.key_id,
                    tuple(stored.tenants),
                    tuple(stored.roles),
                    stored.created_at,
                    used.get(stored.key_id),
                )
            )
        return sorted(infos, key=lambda info: (info.created_at, info.key_id))
