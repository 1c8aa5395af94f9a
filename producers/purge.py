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
cursor, counts), written after every batch (`producers.purge_state` keeps it, the ids and
objects found on the way, and the lock). A purge that dies (killed, Redis or storage down)
is continued by running it again: from the phase and cursor it reached, nothing counted
twice (counts are what each batch really removed). A finished purge run again starts over
and removes what arrived since (0 when nothing did). One purge of a tenant runs at a time.
Each phase is a method of `TenantPurge`, listed in `TenantPurge._phases`.

Stop the tenant's sources first (revoke its keys, its bridge streams and locations):
uploads accepted while the purge runs may survive it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from producers.client import Client
from producers.purge_state import LOCK_TTL_S, PHASES, PurgeLedger, PurgeProgress, PurgeRunning, read_progress, text
from shared.audit import AuditLog, AuditSink
from shared.errors import ObjectNotFound, OmnibindError
from shared.events import DeleteRequest, ObjectRef
from shared.fair_queue import FairQueue
from shared.json_limits import loads_bounded
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.status import parse_record
from shared.tenancy import namespace, tenant_of_id

__all__ = ["DEFAULT_BATCH", "LOCK_TTL_S", "PHASES", "PurgeProgress", "PurgeRunning", "TenantPurge", "read_progress"]

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
        self._batch = batch_size
        self._keys = RedisKeys(client.settings.queue_prefix)
        self._bucket = client.settings.objects.bucket
        self._ledger = PurgeLedger(
            client,
            tenant,
            actor=actor,
            audit=audit or AuditLog.from_settings(client.redis, client.settings),
            on_batch=on_batch,
        )

    def run(self) -> PurgeProgress:
        """Purge (or continue the purge) and return the final progress. Raises
        `PurgeRunning` when another purge of the tenant is running, `TransientError` when a
        store is unavailable (run again to continue)."""
        ledger = self._ledger
        ledger.lock()
        try:
            progress = ledger.begin()
            runners = self._phases()
            for phase in PHASES[PHASES.index(progress.phase) :]:
                cursor = progress.cursor if phase == progress.phase else ""
                ledger.save(phase=phase, cursor=cursor)
                runners[phase](cursor)
            return ledger.finish()
        finally:
            ledger.unlock()

    def _phases(self) -> dict[str, Callable[[str], None]]:
        """What each phase of `PHASES` runs, given the cursor it goes on from."""
        keys = self._keys
        return {
            "statuses": self._purge_statuses,
            "vectors": self._purge_vectors,
            "objects": self._purge_objects,
            "dead_letters": partial(self._purge_stream, "dead_letters", keys.dead, dead_letter=True),
            "decisions": partial(self._purge_stream, "decisions", keys.decisions, indexed=True),
            "results": partial(self._purge_stream, "results", keys.results),
            "webhook_deliveries": partial(self._purge_stream, "webhook_deliveries", keys.webhook_deliveries),
            "pending_deletions": self._purge_pending_deletions,
            "joins": self._purge_joins,
            "quotas": self._purge_quotas,
        }

    # -- phases ------------------------------------------------------------------------

    def _delete_if_there(self, key: str) -> int:
        ref = ObjectRef(bucket=self._bucket, key=key)
        try:
            self._client.objects.head(ref)
        except ObjectNotFound:
            return 0
        self._client.objects.delete(ref)
        return 1

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
            self._ledger.remember([r.upload_id for r in mine])
            self._ledger.remember_objects([r.object for r in mine])
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
            self._ledger.save(phase="statuses", cursor=str(position), removed=removed)
            if position == 0:
                return

    def _purge_vectors(self, _cursor: str) -> None:
        # Collected first: deleting while a store pages through its records may skip some.
        # A resumed purge simply looks again (what was deleted is no longer there).
        vectors = self._client.vectors
        mine = [
            r for r in vectors.iter_records() if r.tenant == self.tenant or tenant_of_id(r.upload_id) == self.tenant
        ]
        self._ledger.remember([r.upload_id for r in mine])
        self._ledger.remember_objects([r.object for r in mine])
        for start in range(0, len(mine), self._batch):
            batch = mine[start : start + self._batch]
            removed = vectors.delete([r.upload_id for r in batch])
            self._ledger.save(phase="vectors", cursor="", removed=removed)

    def _purge_objects(self, cursor: str) -> None:
        # First the objects the tenant's records referenced (in the uploads bucket, outside
        # its namespace too: the Python client's), then everything left in its namespace.
        while not cursor:
            keys = self._ledger.remembered_objects(self._batch)
            if not keys:
                break
            removed = sum(self._delete_if_there(key) for key in keys)
            self._ledger.forget_objects(keys)
            self._ledger.save(phase="objects", cursor="", removed=removed)
        refs = self._client.objects.list_refs(self._bucket, namespace(self.tenant), start_after=cursor)
        for batch in _batches(refs, self._batch):
            for ref in batch:
                self._client.objects.delete(ref)
            # Versions of one key may straddle two batches: resume at the key before the
            # last one, so a killed purge never skips a version (deleting twice is a no-op).
            self._ledger.save(phase="objects", cursor=_before(batch[-1].key), removed=len(batch))

    def _purge_pending_deletions(self, cursor: str) -> None:
        keys = self._keys
        position = int(cursor or 0)
        while True:
            with translate_redis_errors("scanning pending deletions"):
                page: Any = self._redis.hscan(keys.deletions, position, count=self._batch)
            position, found = page
            doomed = [
                text(token) for token, request in found.items() if self._ledger.owns_id(_request_upload_id(request))
            ]
            removed = 0
            if doomed:
                with translate_redis_errors("forgetting pending deletions"):
                    pipe = self._redis.pipeline(transaction=True)
                    pipe.hdel(keys.deletions, *doomed)
                    pipe.zrem(keys.deletions_inflight, *doomed)
                    pipe.delete(*(keys.deletion_deliveries(token) for token in doomed))
                    removed = int(pipe.execute()[0])
            self._ledger.save(phase="pending_deletions", cursor=str(position), removed=removed)
            if position == 0:
                return

    def _purge_joins(self, cursor: str) -> None:
        # Keys are {prefix}:moderation:join:<upload id>:<token>; the token has no ':'.
        head = self._keys.join("", "")[:-1]
        self._purge_keys(
            "joins", (f"{head}*",), cursor, lambda key: self._ledger.owns_id(key[len(head) :].rpartition(":")[0])
        )

    def _purge_quotas(self, cursor: str) -> None:
        # Tenant names hold no glob characters nor ':' (shared.tenancy): the patterns are exact.
        keys = self._keys
        if not cursor:
            waiting = FairQueue(self._redis, keys.prefix, self._client.settings.fairness).forget_tenant(self.tenant)
            self._ledger.save(phase="quotas", cursor="0:0", removed=waiting)
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
                doomed = [key for key in map(text, found) if mine(key)]
                removed = 0
                if doomed:
                    with translate_redis_errors(f"deleting {patterns[number]}"):
                        removed = int(self._redis.delete(*doomed))
                self._ledger.save(phase=phase, cursor=f"{number}:{position}", removed=removed)
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
            mine = [(text(entry_id), fields) for entry_id, fields in page if self._entry_is_mine(fields, dead_letter)]
            doomed = [entry_id for entry_id, _ in mine]
            removed = 0
            if doomed:
                with translate_redis_errors(f"deleting from {key}"):
                    removed = int(self._redis.xdel(key, *doomed))
                    if indexed:
                        uploads = {text(v) for _, fields in mine for k, v in fields.items() if text(k) == "upload_id"}
                        self._redis.delete(*(self._keys.upload_decisions(u) for u in uploads))
            last = text(page[-1][0])
            self._ledger.save(phase=phase, cursor=last, removed=removed)
            if len(page) < self._batch:
                return
            lower = f"({last}"

    def _entry_is_mine(self, raw: Any, dead_letter: bool) -> bool:
        fields = {text(k): text(v) for k, v in raw.items()}
        if self._ledger.owns_id(fields.get("upload_id", "")):
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
