"""Purging a tenant: ``omnibind tenant purge acme`` and ``POST /v1/admin/tenants/acme/purge``.

Everything omnibind keeps of the tenant goes, in phases (`PHASES`):

1. ``statuses``: status records of uploads in its namespace (``acme:...``) or naming it
   (the Python client submits unqualified ids), their delivery counters and their places
   in the recent/in-flight indexes (and the per-status counts);
2. ``vectors``: vector records of the tenant;
3. ``objects``: the objects those records referenced in the uploads bucket, then whatever
   is left there under ``acme:`` (every version);
4. ``dead_letters``, ``decisions``, ``results``, ``webhook_deliveries``: stream entries of
   the tenant's uploads (a dead letter also when its event names the tenant);
5. ``pending_deletions``: deletions of the tenant's uploads not yet carried out (their
   vector records are gone already) with their delivery counters;
6. ``joins``: moderation join hashes of the tenant's uploads (`workers.join_store`);
7. ``quotas``: the tenant's daily quota counters (`shared.quotas`), its unfinished-uploads
   bookkeeping (`shared.tenant_inflight`) and the uploads it has waiting in the fair queues
   (`shared.fair_queue`: their status records went in the first phase).

Objects in other buckets (a platform's own, mapped by ``OMNIBIND_BRIDGE__OBJECT_TENANTS``)
are the platform's and left alone.

Resumable and idempotent: progress is the hash ``{prefix}:purge:<tenant>`` (state, phase,
cursor, counts), written after every batch. A purge that dies (killed, Redis or storage
down) is continued by running it again: from the phase and cursor it reached, nothing
counted twice (counts are what each batch really removed). A finished purge run again
starts over and removes what arrived since (0 when nothing did). Ids of the tenant found
outside its namespace are kept in ``{prefix}:purge:<tenant>:ids`` until the purge is done,
so the stream phases of a resumed purge still know them. One purge of a tenant runs at a
time (a lock renewed every batch; a killed purge's lock lapses after `LOCK_TTL_S`).

Stop the tenant's sources first (revoke its keys, its bridge streams and locations):
uploads accepted while the purge runs may survive it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from producers.client import Client
from shared.audit import Action, AuditLog, AuditSink
from shared.errors import ObjectNotFound, OmnibindError
from shared.events import DeleteRequest, ObjectRef, utcnow
from shared.fair_queue import FairQueue
from shared.json_limits import loads_bounded
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.status import parse_record
from shared.tenancy import namespace, tenant_of_id

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
DEFAULT_BATCH = 500

# Forget one status record as the status script would have kept it: the record, its
# delivery counters, its index entries, and its status's count; and the upload's index of
# its decisions. Returns 1 if it existed.
_FORGET_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[6])
redis.call('HINCRBY', KEYS[3], status, -1)
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
"""
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


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_progress(client: Client, tenant: str) -> PurgeProgress | None:
    """The stored progress of `tenant`'s purge, or None if it was never purged."""
    with translate_redis_errors(f"reading the purge of {tenant}"):
        raw: Any = client.redis.hgetall(RedisKeys(client.settings.queue_prefix).purge(tenant))
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
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


class TenantPurge:
    """One purge of `tenant` (module docstring). `on_batch` is called with the progress after
    every batch (the CLI prints it)."""

    def __init__(
        self,
        client: Client,
        tenant: str,
        *,
        actor: str,
        audit: AuditSink | None = None,
        batch_size: int = DEFAULT_BATCH,
        on_batch: Callable[[PurgeProgress], None] | None = None,
    ) -> None:
        self._client = client
        self._redis = client.redis
        self.tenant = tenant
        self._actor = actor
        self._audit = audit or AuditLog.from_settings(client.redis, client.settings)
        self._batch = batch_size
        self._on_batch = on_batch
        keys = RedisKeys(client.settings.queue_prefix)
        self._keys = keys
        self._state_key = keys.purge(tenant)
        self._ids_key = f"{self._state_key}:ids"
        self._refs_key = f"{self._state_key}:objects"
        self._lock_key = f"{self._state_key}:lock"
        self._token = secrets.token_hex(8)
        self._bucket = client.settings.objects.bucket
        self._extra_ids: set[str] | None = None

    def run(self) -> PurgeProgress:
        """Purge (or continue the purge) and return the final progress. Raises
        `PurgeRunning` when another purge of the tenant is running, `TransientError` when a
        store is unavailable (run again to continue)."""
        self._lock()
        try:
            progress = self._begin()
            start = PHASES.index(progress.phase)
            for phase in PHASES[start:]:
                cursor = progress.cursor if phase == progress.phase else ""
                self._save(phase=phase, cursor=cursor)
                getattr(self, f"_purge_{phase}")(cursor)
            return self._finish()
        finally:
            self._unlock()

    # -- state -------------------------------------------------------------------------

    def _begin(self) -> PurgeProgress:
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

    def _save(self, *, phase: str, cursor: str, removed: int = 0) -> None:
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

    def _finish(self) -> PurgeProgress:
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

    def _lock(self) -> None:
        with translate_redis_errors("taking the purge lock"):
            taken = self._redis.set(self._lock_key, self._token, nx=True, ex=LOCK_TTL_S)
        if not taken:
            raise PurgeRunning(
                f"a purge of tenant {self.tenant!r} is running (its lock lapses {LOCK_TTL_S} s after it stops)"
            )

    def _unlock(self) -> None:
        with translate_redis_errors("releasing the purge lock"):
            self._redis.eval(_RELEASE_LUA, 1, self._lock_key, self._token)

    # -- what belongs to the tenant ------------------------------------------------------

    def _owns_id(self, upload_id: str) -> bool:
        if tenant_of_id(upload_id) == self.tenant:
            return True
        if self._extra_ids is None:
            with translate_redis_errors("reading the purge's ids"):
                members: Any = self._redis.smembers(self._ids_key)
            self._extra_ids = {_text(m) for m in members}
        return upload_id in self._extra_ids

    def _remember(self, upload_ids: list[str]) -> None:
        """Keep ids outside the tenant's namespace for the stream phases (across a crash)."""
        outside = [upload_id for upload_id in upload_ids if tenant_of_id(upload_id) != self.tenant]
        if outside:
            with translate_redis_errors("recording the purge's ids"):
                self._redis.sadd(self._ids_key, *outside)
            if self._extra_ids is not None:
                self._extra_ids.update(outside)

    def _remember_objects(self, refs: list[ObjectRef | None]) -> None:
        """Keep the objects records reference in the uploads bucket (the platform's own
        buckets stay) for the objects phase, across a crash."""
        keys = {ref.key for ref in refs if ref is not None and ref.bucket == self._bucket}
        if keys:
            with translate_redis_errors("recording the purge's objects"):
                self._redis.sadd(self._refs_key, *keys)

    def _delete_if_there(self, key: str) -> int:
        ref = ObjectRef(bucket=self._bucket, key=key)
        try:
            self._client.objects.head(ref)
        except ObjectNotFound:
            return 0
        self._client.objects.delete(ref)
        return 1

    # -- phases ------------------------------------------------------------------------

    def _purge_statuses(self, cursor: str) -> None:
        position = int(cursor or 0)
        pattern = f"{self._keys.prefix}:upload:*"
        forget = self._redis.register_script(_FORGET_LUA)
        while True:
            with translate_redis_errors("scanning status records"):
                position, found = self._redis.scan(position, match=pattern, count=self._batch)
                pipe = self._redis.pipeline(transaction=False)
                for key in found:
                    pipe.hgetall(key)
                raws = pipe.execute()
            mine = [parse_record(raw) for raw in raws if raw]
            mine = [r for r in mine if r.tenant == self.tenant or tenant_of_id(r.upload_id) == self.tenant]
            self._remember([r.upload_id for r in mine])
            self._remember_objects([r.object for r in mine])
            removed = 0
            with translate_redis_errors("deleting status records"):
                for record in mine:
                    keys = [
                        self._keys.upload(record.upload_id),
                        self._keys.deliveries(record.upload_id),
                        self._keys.counts,
                        self._keys.recent,
                        self._keys.inflight,
                        self._keys.upload_decisions(record.upload_id),
                    ]
                    removed += int(forget(keys=keys, args=[record.upload_id]))  # type: ignore[arg-type]
            self._save(phase="statuses", cursor=str(position), removed=removed)
            if position == 0:
                return

    def _purge_vectors(self, _cursor: str) -> None:
        # Collected first: deleting while a store pages through its records may skip some.
        # A resumed purge simply looks again (what was deleted is no longer there).
        vectors = self._client.vectors
        mine = [
            r for r in vectors.iter_records() if r.tenant == self.tenant or tenant_of_id(r.upload_id) == self.tenant
        ]
        self._remember([r.upload_id for r in mine])
        self._remember_objects([r.object for r in mine])
        for start in range(0, len(mine), self._batch):
            batch = mine[start : start + self._batch]
            removed = vectors.delete([r.upload_id for r in batch])
            self._save(phase="vectors", cursor="", removed=removed)

    def _purge_objects(self, cursor: str) -> None:
        # First the objects the tenant's records referenced (in the uploads bucket, outside
        # its namespace too: the Python client's), then everything left in its namespace.
        while not cursor:
            with translate_redis_errors("reading the purge's objects"):
                members: Any = self._redis.srandmember(self._refs_key, self._batch)
            if not members:
                break
            keys = [_text(m) for m in members]
            removed = sum(self._delete_if_there(key) for key in keys)
            with translate_redis_errors("recording the purge's objects"):
                self._redis.srem(self._refs_key, *keys)
            self._save(phase="objects", cursor="", removed=removed)
        refs = self._client.objects.list_refs(self._bucket, namespace(self.tenant), start_after=cursor)
        for batch in _batches(refs, self._batch):
            for ref in batch:
                self._client.objects.delete(ref)
            # Versions of one key may straddle two batches: resume at the key before the
            # last one, so a killed purge never skips a version (deleting twice is a no-op).
            self._save(phase="objects", cursor=_before(batch[-1].key), removed=len(batch))

    def _purge_dead_letters(self, cursor: str) -> None:
        self._purge_stream("dead_letters", self._keys.dead, cursor, dead_letter=True)

    def _purge_decisions(self, cursor: str) -> None:
        self._purge_stream("decisions", self._keys.decisions, cursor, indexed=True)

    def _purge_results(self, cursor: str) -> None:
        self._purge_stream("results", self._keys.results, cursor)

    def _purge_webhook_deliveries(self, cursor: str) -> None:
        self._purge_stream("webhook_deliveries", self._keys.webhook_deliveries, cursor)

    def _purge_pending_deletions(self, cursor: str) -> None:
        keys = self._keys
        position = int(cursor or 0)
        while True:
            with translate_redis_errors("scanning pending deletions"):
                page: Any = self._redis.hscan(keys.deletions, position, count=self._batch)
            position, found = page
            doomed = [_text(token) for token, request in found.items() if self._owns_id(_request_upload_id(request))]
            removed = 0
            if doomed:
                with translate_redis_errors("forgetting pending deletions"):
                    pipe = self._redis.pipeline(transaction=True)
                    pipe.hdel(keys.deletions, *doomed)
                    pipe.zrem(keys.deletions_inflight, *doomed)
                    pipe.delete(*(keys.deletion_deliveries(token) for token in doomed))
                    removed = int(pipe.execute()[0])
            self._save(phase="pending_deletions", cursor=str(position), removed=removed)
            if position == 0:
                return

    def _purge_joins(self, cursor: str) -> None:
        # Keys are {prefix}:moderation:join:<upload id>:<token>; the token has no ':'.
        head = self._keys.join("", "")[:-1]
        self._purge_keys("joins", (f"{head}*",), cursor, lambda key: self._owns_id(key[len(head) :].rpartition(":")[0]))

    def _purge_quotas(self, cursor: str) -> None:
        # Tenant names hold no glob characters nor ':' (shared.tenancy): the patterns are exact.
        keys = self._keys
        if not cursor:
            waiting = FairQueue(self._redis, keys.prefix, self._client.settings.fairness).forget_tenant(self.tenant)
            self._save(phase="quotas", cursor="0:0", removed=waiting)
            cursor = "0:0"
        patterns = (keys.quota(self.tenant, "*"), *keys.tenant_state(self.tenant))
        self._purge_keys("quotas", patterns, cursor, lambda _key: True)

    def _purge_keys(self, phase: str, patterns: tuple[str, ...], cursor: str, mine: Callable[[str], bool]) -> None:
        """Delete the keys matching `patterns` that `mine` accepts, a SCAN batch at a time.
        The cursor is ``<pattern index>:<scan cursor>``."""
        index, _, position_text = (cursor or "0:0").partition(":")
        for number in range(int(index), len(patterns)):
            position = int(position_text) if number == int(index) else 0
            while True:
                with translate_redis_errors(f"scanning {patterns[number]}"):
                    position, found = self._redis.scan(position, match=patterns[number], count=self._batch)
                doomed = [key for key in map(_text, found) if mine(key)]
                removed = 0
                if doomed:
                    with translate_redis_errors(f"deleting {patterns[number]}"):
                        removed = int(self._redis.delete(*doomed))
                self._save(phase=phase, cursor=f"{number}:{position}", removed=removed)
                if position == 0:
                    break

    def _purge_stream(
        self, phase: str, key: str, cursor: str, *, dead_letter: bool = False, indexed: bool = False
    ) -> None:
        """Delete the tenant's entries of the stream `key`; `indexed`: the decision log,
        whose uploads' indexes of their entries go too (those of records already expired)."""
        lower = f"({cursor}" if cursor else "-"
        while True:
            with translate_redis_errors(f"reading {key}"):
                page: Any = self._redis.xrange(key, min=lower, count=self._batch)
            if not page:
                return
            mine = [(_text(entry_id), fields) for entry_id, fields in page if self._entry_is_mine(fields, dead_letter)]
            doomed = [entry_id for entry_id, _ in mine]
            removed = 0
            if doomed:
                with translate_redis_errors(f"deleting from {key}"):
                    removed = int(self._redis.xdel(key, *doomed))
                    if indexed:
                        uploads = {_text(v) for _, fields in mine for k, v in fields.items() if _text(k) == "upload_id"}
                        self._redis.delete(*(self._keys.upload_decisions(u) for u in uploads))
            last = _text(page[-1][0])
            self._save(phase=phase, cursor=last, removed=removed)
            if len(page) < self._batch:
                return
            lower = f"({last}"

    def _entry_is_mine(self, raw: Any, dead_letter: bool) -> bool:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if self._owns_id(fields.get("upload_id", "")):
            return True
        return dead_letter and _event_tenant(fields.get("event", "")) == self.tenant


def _event_tenant(event_json: str) -> str | None:
    try:
        data: Any = loads_bounded(event_json, max_bytes=None, what="dead letter event")
    except (OmnibindError, json.JSONDecodeError):
        return None
    tenant = data.get("tenant") if isinstance(data, dict) else None
    return tenant if isinstance(tenant, str) else None


def _request_upload_id(request_json: str | bytes) -> str:
    try:
        return DeleteRequest.model_validate_json(request_json).upload_id
    except ValueError:  # unreadable: not the tenant's to judge
        return ""


def _before(key: str) -> str:
    """A cursor that sorts just before `key` (its listing resumes at `key` itself)."""
    return key[:-1] if key else ""


def _batches(refs: Iterator[ObjectRef], size: int) -> Iterator[list[ObjectRef]]:
    batch: list[ObjectRef] = []
    for ref in refs:
        batch.append(ref)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
