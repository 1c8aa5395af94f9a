"""Fair queues in front of the cpu queue: one tenant's flood cannot starve another's trickle
(``OMNIBIND_FAIRNESS__*``, docs/operations.md "Fairness").

Without it the cpu queue is one FIFO: an upload of tenant B waits behind every upload tenant
A submitted before it. With it, an accepted upload waits in its tenant's list, and one
dispatcher (`FairDispatcher`, a thread of the cpu workers, one active at a time by a Redis
lock) feeds the pipeline from those lists, in passes over the tenants with uploads waiting,
while each tenant has fewer than its share of dispatched uploads unfinished (`window` x its
weight). So A's flood holds at most `window` uploads in the pipeline at once, and B's upload
is dispatched as soon as B has fewer than `window` of its own in flight: it runs beside a
few of A's uploads instead of behind all of them. With ``sparse_first`` (the default) A gets
no new dispatch while B, a tenant without a backlog, has an upload waiting or in flight
(for at most ``sparse_hold_max_s`` at a time), so B's upload runs beside at most the few of
A's already in the pipeline when it arrived; and B's upload is sent marked sparse
(`shared.queue.SPARSE_HEADER`, carried from stage to stage), so the gpu and index batchers
launch it at once instead of holding it back to gather company — with a flood held to its
window, the company a batcher waits for (up to ``max_wait_ms``) is one or two of A's uploads,
and that wait was most of B's delay (docs/operations.md "Fairness").

Keys (`shared.redis_keys`), all under the prefix:

- ``fair:queue:<tenant>``: list of the tenant's waiting events (JSON), oldest at the tail;
  uploads without a tenant wait under ``-`` (no tenant name can be ``-``);
- ``fair:active``: list of the tenants with uploads waiting, in the order they became so;
- ``fair:waiting``: hash upload id -> tenant of every waiting upload (the stall sweeper
  leaves these alone: their message does not exist yet on purpose);
- ``fair:dispatching``: hash upload id -> event, taken from a list and not yet confirmed
  sent to the cpu queue;
- ``fair:dispatched``: sorted set ``<tenant>/<upload id>`` -> dispatch time (epoch ms), what
  is in flight (finished ones are pruned when the dispatcher counts);
- ``fair:wake``: a one-element list the producers push to, so an idle dispatcher wakes at
  once (BLPOP) instead of polling; ``fair:lock``: the dispatcher's lock.

Nothing accepted is lost, whatever is killed when: a push is one Lua script (the event is in
its list, or the producer got an error and the upload was not accepted); a take moves the
event from the list into ``dispatching`` in one script; the dispatcher sends it and only then
forgets it there. A dispatcher killed between the two leaves the event in ``dispatching``,
and whichever dispatcher holds the lock next sends it first of all: at most that one upload
is sent twice, which the pipeline's idempotent stages absorb (deterministic ids, status
transitions that refuse a stale run). Redis refusing writes (OOM, a replica being promoted)
stops the dispatcher until Redis takes writes again; nothing moves meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import redis

from shared.config import FairnessSettings, Settings
from shared.errors import OmnibindError
from shared.events import UploadEvent, UploadStatus
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

log = logging.getLogger(__name__)

NO_TENANT = "-"  # the list of uploads without a tenant (no tenant name can be "-")
_TERMINAL = {status.value for status in UploadStatus if status.terminal}

# KEYS: 1 the tenant's list, 2 active, 3 waiting, 4 wake. ARGV: 1 tenant, 2 upload id, 3 event.
# Returns 1 when queued, 0 when the upload waits already (a repeat: queued once).
_PUSH_LUA = """
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
if redis.call('LLEN', KEYS[1]) == 1 then redis.call('RPUSH', KEYS[2], ARGV[1]) end
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 0)
return 1
"""

# Take the oldest event of a tenant; a tenant whose list empties leaves the active list.
# KEYS: 1 the tenant's list, 2 active, 3 waiting, 4 dispatching. ARGV: 1 tenant.
# Returns the event, or false when its list was empty.
_TAKE_LUA = """
local event = redis.call('RPOP', KEYS[1])
if event then
  local id = cjson.decode(event)['id']
  redis.call('HSET', KEYS[4], id, event)
  redis.call('HDEL', KEYS[3], id)
end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('LREM', KEYS[2], 0, ARGV[1]) end
return event
"""

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def list_name(tenant: str | None) -> str:
    return tenant if tenant is not None else NO_TENANT


def _member(event: UploadEvent) -> str:
    """An upload's entry in the window: ``<list name>/<upload id>`` (neither holds a '/')."""
    return f"{list_name(event.tenant)}/{event.id}"


class FairQueue:
    """The per-tenant lists in Redis (module docstring). Methods raise `RedisUnavailable`."""

    def __init__(self, client: redis.Redis, prefix: str, settings: FairnessSettings) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self.settings = settings
        self._push = client.register_script(_PUSH_LUA)
        self._take = client.register_script(_TAKE_LUA)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> FairQueue:
        return cls(client, settings.queue_prefix, settings.fairness)

    def weight(self, tenant: str) -> int:
        """Uploads `tenant` (a list name) gets per pass; its share of the window is this many windows."""
        return self.settings.weights.get(tenant, self.settings.default_weight)

    def push(self, event: UploadEvent) -> bool:
        """Queue `event` in its tenant's list; False when it waits there already."""
        tenant = list_name(event.tenant)
        keys = [self.keys.fair_queue(tenant), self.keys.fair_active, self.keys.fair_waiting, self.keys.fair_wake]
        with translate_redis_errors(f"queueing upload {event.id} for its turn"):
            return bool(self._push(keys=keys, args=[tenant, event.id, event.model_dump_json()]))

    def active(self) -> list[str]:
        """The tenants (list names) with uploads waiting, in the order they became so."""
        with translate_redis_errors("listing the tenants with uploads waiting"):
            ring: Any = self._redis.lrange(self.keys.fair_active, 0, -1)
        return [_text(tenant) for tenant in ring]

    def backlogs(self, tenants: list[str]) -> dict[str, int]:
        """How many uploads each of `tenants` (list names) has waiting."""
        if not tenants:
            return {}
        with translate_redis_errors("counting the uploads waiting per tenant"):
            pipe = self._redis.pipeline(transaction=False)
            for tenant in tenants:
                pipe.llen(self.keys.fair_queue(tenant))
            counts = pipe.execute()
        return {tenant: int(count) for tenant, count in zip(tenants, counts, strict=True)}

    def take(self, tenant: str) -> UploadEvent | None:
        """The oldest upload of `tenant` (a list name), moved to ``dispatching``; None when it
        has none waiting."""
        keys = self.keys
        with translate_redis_errors(f"taking the next upload of {tenant}"):
            taken: Any = self._take(
                keys=[keys.fair_queue(tenant), keys.fair_active, keys.fair_waiting, keys.fair_dispatching],
                args=[tenant],
            )
        return UploadEvent.model_validate_json(taken) if taken is not None else None

    def sent(self, event: UploadEvent, at_ms: int) -> None:
        """`event`'s message is in the cpu queue: it leaves ``dispatching`` for the window."""
        with translate_redis_errors(f"recording upload {event.id} as dispatched"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self.keys.fair_dispatching, event.id)
            pipe.zadd(self.keys.fair_dispatched, {_member(event): at_ms})
            pipe.execute()

    def dispatching(self) -> list[UploadEvent]:
        """Uploads taken but not confirmed sent (a dispatcher died in between)."""
        with translate_redis_errors("reading the uploads being dispatched"):
            raw: Any = self._redis.hvals(self.keys.fair_dispatching)
        return [UploadEvent.model_validate_json(doc) for doc in raw]

    def in_window(self, now_ms: int) -> Counter[str]:
        """Dispatched uploads still unfinished, per tenant (list name), after forgetting the
        finished ones (and any older than ``window_hold_s``: a lost message must not hold a
        place for ever)."""
        key = self.keys.fair_dispatched
        with translate_redis_errors("counting the dispatched uploads"):
            members: Any = self._redis.zrange(key, 0, -1, withscores=True)
            if not members:
                return Counter()
            owners = [_text(member).split("/", 1) for member, _ in members]
            pipe = self._redis.pipeline(transaction=False)
            for _tenant, upload_id in owners:
                pipe.hget(self.keys.upload(upload_id), "status")
            statuses = pipe.execute()
            oldest_ms = now_ms - int(self.settings.window_hold_s * 1000)
            done = [
                _text(member)
                for (member, at_ms), status in zip(members, statuses, strict=True)
                if status is None or _text(status) in _TERMINAL or at_ms < oldest_ms
            ]
            if done:
                self._redis.zrem(key, *done)
        finished = set(done)
        return Counter(tenant for (tenant, upload_id) in owners if f"{tenant}/{upload_id}" not in finished)

    def waiting(self) -> int:
        """Uploads waiting in the lists (all tenants)."""
        with translate_redis_errors("counting the uploads waiting for their turn"):
            count: Any = self._redis.hlen(self.keys.fair_waiting)
        return int(count)

    def holds(self, upload_ids: Iterable[str]) -> set[str]:
        """The ones of `upload_ids` waiting in a list or being dispatched."""
        ids = list(upload_ids)
        if not ids:
            return set()
        with translate_redis_errors("looking up uploads waiting for their turn"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(self.keys.fair_waiting, ids)
            pipe.hmget(self.keys.fair_dispatching, ids)
            waiting, dispatching = pipe.execute()
        return {upload_id for upload_id, w, d in zip(ids, waiting, dispatching, strict=True) if w or d}

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until a producer pushed something (or `timeout_s` passed)."""
        with translate_redis_errors("waiting for uploads"):
            self._redis.blpop([self.keys.fair_wake], timeout=timeout_s)

    def forget_tenant(self, tenant: str) -> int:
        """Drop everything `tenant` has waiting (purge); returns how many uploads."""
        keys = self.keys
        with translate_redis_errors(f"dropping the waiting uploads of {tenant}"):
            waiting: Any = self._redis.hgetall(keys.fair_waiting)
            ids = [_text(upload_id) for upload_id, owner in waiting.items() if _text(owner) == tenant]
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(keys.fair_queue(tenant))
            if ids:
                pipe.hdel(keys.fair_waiting, *ids)
            pipe.execute()
        return len(ids)


Send = Callable[[UploadEvent, bool], None]
"""Publishes one event to the cpu stage (True: a sparse tenant's upload); raises on failure."""


class FairDispatcher:
    """Feeds the pipeline from the fair queues (module docstring). `send` publishes one event
    to the cpu stage, marked sparse or not, and raises on failure. `run_once` dispatches what
    the window has room for; `run` loops (taking the lock, dispatching, waiting) until `stop`;
    `start` runs `run` in a daemon thread."""

    def __init__(
        self,
        queue: FairQueue,
        send: Send,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.queue = queue
        self._send = send
        self._clock_ms = clock_ms
        self._redis = queue._redis
        self._me = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._renew = self._redis.register_script(_RENEW_LUA)
        self._holding = False
        self._last_sent_ms: dict[str, int] = {}  # per tenant, for sparse_hold_max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="fair-dispatcher", daemon=True)

    @property
    def settings(self) -> FairnessSettings:
        return self.queue.settings

    def start(self) -> FairDispatcher:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def hold_lock(self) -> bool:
        """Take or renew the dispatcher lock; True while this dispatcher is the active one."""
        ttl_ms = int(self.settings.lock_ttl_s * 1000)
        with translate_redis_errors("taking the dispatcher lock"):
            held = bool(self._renew(keys=[self.queue.keys.fair_lock], args=[self._me, ttl_ms]))
        if held and not self._holding:
            log.info("fair dispatcher active (%s)", self._me)
            self._resend_dispatching()
        self._holding = held
        return held

    def _resend_dispatching(self) -> None:
        # What a dead dispatcher took and may not have sent: sent now, before anything new.
        for event in self.queue.dispatching():
            log.warning("upload %s was being dispatched when its dispatcher stopped: sending it", event.id)
            self._dispatch(event, sparse=False)

    def _dispatch(self, event: UploadEvent, *, sparse: bool) -> None:
        self._send(event, sparse)
        self.queue.sent(event, self._clock_ms())

    def run_once(self) -> int:
        """Dispatch what may go now; returns how many. In passes over the tenants with uploads
        waiting (in the order they became active), each tenant below its share of the window
        (``window`` x its weight unfinished) gets up to its weight of uploads, until no tenant
        can take more: a tenant's uploads never wait for another tenant's to finish. With
        ``sparse_first``, tenants with a backlog sit this call out while a tenant without one has
        uploads waiting or in flight (`held_back`), and while some tenant has a backlog the
        uploads of those without one are sent marked sparse."""
        now_ms = self._clock_ms()
        busy = self.queue.in_window(now_ms)
        tenants = self.queue.active()
        bulk = self.bulk(tenants)
        held = self.held_back(tenants, bulk, busy, now_ms)
        sent = 0
        while True:
            before = sent
            for tenant in self.queue.active():
                if tenant in held:
                    continue
                weight = self.queue.weight(tenant)
                for _ in range(weight):
                    if busy[tenant] >= self.settings.window * weight:
                        break
                    event = self.queue.take(tenant)
                    if event is None:
                        break
                    # Marked only beside a backlog: among tenants without one, batching is as usual.
                    self._dispatch(event, sparse=bool(bulk) and tenant not in bulk)
                    self._last_sent_ms[tenant] = now_ms
                    busy[tenant] += 1
                    sent += 1
            if sent == before:
                return sent

    def bulk(self, tenants: list[str]) -> set[str]:
        """The tenants of `tenants` with a backlog: more uploads waiting than their window
        (only asked with ``sparse_first``; without it, no tenant is told apart)."""
        if not self.settings.sparse_first or not tenants:
            return set()
        backlog = self.queue.backlogs(tenants)
        return {tenant for tenant in tenants if backlog[tenant] > self.settings.window * self.queue.weight(tenant)}

    def held_back(self, tenants: list[str], bulk: set[str], busy: Counter[str], now_ms: int) -> set[str]:
        """The tenants of `tenants` (those with uploads waiting) that get no dispatch now.

        Sparse flows first, as in FQ-CoDel: a tenant with more uploads waiting than its window
        (a backlog) is held back while a tenant without one has uploads waiting or in flight,
        so a trickle's upload runs beside as few of a flood's as possible: on a busy box every
        upload in flight slows every other one down (CPU share, single-process stages), and a
        window alone still leaves the flood's uploads beside each of the trickle's. A tenant
        held back longer than ``sparse_hold_max_s`` since its last dispatch goes anyway, so
        others' single uploads cannot starve it. `bulk`: the tenants with a backlog, from
        `bulk` (empty without ``sparse_first``)."""
        if not bulk:
            return set()
        sparse_busy = any(tenant not in bulk for tenant in tenants) or any(
            count > 0 and tenant not in bulk for tenant, count in busy.items()
        )
        if not sparse_busy:
            return set()
        hold_ms = int(self.settings.sparse_hold_max_s * 1000)
        return {tenant for tenant in bulk if now_ms - self._last_sent_ms.get(tenant, 0) < hold_ms}

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except (OmnibindError, redis.RedisError) as exc:  # Redis away or refusing writes
                self._holding = False
                log.warning("fair dispatcher paused: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # a bug must not end dispatching for good
                log.exception("fair dispatcher round failed")
                self._stop.wait(1.0)

    def _round(self) -> None:
        if not self.hold_lock():
            self._stop.wait(self.settings.lock_ttl_s / 2)
            return
        self.run_once()
        if self.queue.waiting() == 0:
            # Idle: woken by the next push. Shorter than the lock's life, which is renewed next round.
            self.queue.wait_for_work(min(1.0, self.settings.lock_ttl_s / 3))
        else:
            # Windows full: look again after poll_s for finished uploads, or at once when a
            # producer pushes (a trickle's upload must not wait out the poll behind a backlog).
            self.queue.wait_for_work(self.settings.poll_s)
