"""What a tenant's purge (`producers.purge`) writes down in Redis, so that it can be resumed
and is never run twice at once.

- ``{prefix}:purge:<tenant>``: its progress (state, phase, cursor, counts, times, runs),
  written after every batch (`PurgeProgress`, `read_progress`);
- ``…:ids``: ids of the tenant's uploads found outside its namespace, which the stream
  phases of a resumed purge must still recognise;
- ``…:objects``: keys of the objects its records referenced in the uploads bucket, for the
  objects phase;
- ``…:lock``: one purge of a tenant at a time; renewed with every batch, a killed purge's
  lock lapses after `LOCK_TTL_S`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from producers.client import Client
from shared.audit import Action, AuditSink
from shared.errors import OmnibindError
from shared.events import ObjectRef, utcnow
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.tenancy import tenant_of_id

log = logging.getLogger(__name__)

PHASES = (
    "statuses",
    "vectors",
    "objects",
    "dead_letters",
    "decisions",
    "results",
    "webhook_deliveries",
    "pending_deletions",
    "joins",
    "quotas",
)
LOCK_TTL_S = 30  # a killed purge's lock lapses after this; every batch renews it

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class PurgeRunning(OmnibindError):
    """Another purge of the tenant holds its lock."""

    reason = "purge_running"


@dataclass(frozen=True)
class PurgeProgress:
    """Where a purge stands (as stored in ``{prefix}:purge:<tenant>``)."""

    tenant: str
    state: str  # running | done
    phase: str
    cursor: str
    counts: dict[str, int] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    runs: int = 1  # how many times it was started or resumed

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_doc(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "state": self.state,
            "phase": self.phase,
            "counts": {phase: self.counts.get(phase, 0) for phase in PHASES},
            "total": self.total,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "runs": self.runs,
        }


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_progress(client: Client, tenant: str) -> PurgeProgress | None:
    """The stored progress of `tenant`'s purge, or None if it was never purged."""
    with translate_redis_errors(f"reading the purge of {tenant}"):
        raw: Any = client.redis.hgetall(RedisKeys(client.settings.queue_prefix).purge(tenant))
    if not raw:
        return None
    fields = {text(k): text(v) for k, v in raw.items()}
    return PurgeProgress(
        tenant=tenant,
        state=fields.get("state", "running"),
        phase=fields.get("phase", PHASES[0]),
        cursor=fields.get("cursor", ""),
        counts={phase: int(fields.get(f"count:{phase}", "0")) for phase in PHASES},
        started_at=datetime.fromisoformat(fields["started_at"]) if fields.get("started_at") else None,
        finished_at=datetime.fromisoformat(fields["finished_at"]) if fields.get("finished_at") else None,
        runs=int(fields.get("runs", "1")),
    )


class PurgeLedger:
    """The Redis records of one purge of `tenant` (module docstring); the start and end of
    a purge go to the audit log as `actor`'s. `on_batch` is called with the progress after
    every batch."""

    def __init__(
        self,
        client: Client,
        tenant: str,
        *,
        actor: str,
        audit: AuditSink,
        on_batch: Callable[[PurgeProgress], None] | None = None,
    ) -> None:
        self._client = client
        self._redis = client.redis
        self.tenant = tenant
        self._actor = actor
        self._audit = audit
        self._on_batch = on_batch
        self._state_key = RedisKeys(client.settings.queue_prefix).purge(tenant)
        self._ids_key = f"{self._state_key}:ids"
        self._refs_key = f"{self._state_key}:objects"
        self._lock_key = f"{self._state_key}:lock"
        self._token = secrets.token_hex(8)
        self._bucket = client.settings.objects.bucket
        self._extra_ids: set[str] | None = None

    # -- progress ------------------------------------------------------------------------

    def begin(self) -> PurgeProgress:
        """The progress to go on from: a running purge's, else a fresh one (recorded)."""
        stored = read_progress(self._client, self.tenant)
        if stored is not None and stored.state == "running":
            with translate_redis_errors("resuming a purge"):
                self._redis.hincrby(self._state_key, "runs", 1)
            log.info("resuming the purge of %s at %s", self.tenant, stored.phase)
            return read_progress(self._client, self.tenant) or stored
        now = utcnow().isoformat()
        with translate_redis_errors("starting a purge"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._state_key, self._ids_key, self._refs_key)
            pipe.hset(
                self._state_key,
                mapping={"state": "running", "phase": PHASES[0], "cursor": "", "started_at": now, "runs": 1},
            )
            pipe.execute()
        self._audit.record(Action.TENANT_PURGE_START, actor=self._actor, target=self.tenant, tenant=self.tenant)
        return read_progress(self._client, self.tenant)  # type: ignore[return-value]  # just written

    def save(self, *, phase: str, cursor: str, removed: int = 0) -> None:
        """Record that `phase` reached `cursor`, having removed `removed` more; renew the lock."""
        with translate_redis_errors("recording purge progress"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._state_key, mapping={"phase": phase, "cursor": cursor})
            if removed:
                pipe.hincrby(self._state_key, f"count:{phase}", removed)
            pipe.set(self._lock_key, self._token, ex=LOCK_TTL_S)
            pipe.execute()
        if self._on_batch is not None:
            progress = read_progress(self._client, self.tenant)
            if progress is not None:
                self._on_batch(progress)

    def finish(self) -> PurgeProgress:
        with translate_redis_errors("finishing a purge"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._state_key, mapping={"state": "done", "cursor": "", "finished_at": utcnow().isoformat()})
            pipe.delete(self._ids_key, self._refs_key)
            pipe.execute()
        final = read_progress(self._client, self.tenant)
        assert final is not None
        self._audit.record(
            Action.TENANT_PURGE_DONE,
            actor=self._actor,
            target=self.tenant,
            tenant=self.tenant,
            detail={"counts": final.as_doc()["counts"], "total": final.total, "runs": final.runs},
        )
        log.info("purged tenant %s: %d items (%s)", self.tenant, final.total, final.counts)
        return final

    # -- the lock ------------------------------------------------------------------------

    def lock(self) -> None:
        with translate_redis_errors("taking the purge lock"):
            taken = self._redis.set(self._lock_key, self._token, nx=True, ex=LOCK_TTL_S)
        if not taken:
            raise PurgeRunning(
                f"a purge of tenant {self.tenant!r} is running (its lock lapses {LOCK_TTL_S} s after it stops)"
            )

    def unlock(self) -> None:
        with translate_redis_errors("releasing the purge lock"):
            self._redis.eval(_RELEASE_LUA, 1, self._lock_key, self._token)

    # -- what belongs to the tenant ------------------------------------------------------

    def owns_id(self, upload_id: str) -> bool:
        if tenant_of_id(upload_id) == self.tenant:
            return True
        if self._extra_ids is None:
            with translate_redis_errors("reading the purge's ids"):
                members: Any = self._redis.smembers(self._ids_key)
            self._extra_ids = {text(m) for m in members}
        return upload_id in self._extra_ids

    def remember(self, upload_ids: list[str]) -> None:
        """Keep ids outside the tenant's namespace for the stream phases (across a crash)."""
        outside = [upload_id for upload_id in upload_ids if tenant_of_id(upload_id) != self.tenant]
        if outside:
            with translate_redis_errors("recording the purge's ids"):
                self._redis.sadd(self._ids_key, *outside)
            if self._extra_ids is not None:
                self._extra_ids.update(outside)

    def remember_objects(self, refs: list[ObjectRef | None]) -> None:
        """Keep the objects records reference in the uploads bucket (the platform's own
        buckets stay) for the objects phase, across a crash."""
        keys = {ref.key for ref in refs if ref is not None and ref.bucket == self._bucket}
        if keys:
            with translate_redis_errors("recording the purge's objects"):
                self._redis.sadd(self._refs_key, *keys)

    def remembered_objects(self, count: int) -> list[str]:
        """Up to `count` of the remembered object keys (none left: empty)."""
        with translate_redis_errors("reading the purge's objects"):
            members: Any = self._redis.srandmember(self._refs_key, count)
        return [text(m) for m in members or []]

    def forget_objects(self, keys: list[str]) -> None:
        with translate_redis_errors("recording the purge's objects"):
            self._redis.srem(self._refs_key, *keys)
