"""kombu's Redis transport, with every message envelope checked before kombu parses it
(`shared.broker_envelopes`), and acknowledgements and reads that outlive a Redis refusing writes.

kombu lets a refused write (Redis full under noeviction, a failed AOF write, too few
replicas) of its acknowledgement emulation escape into Celery's event loop, which stops the
worker ("Unrecoverable error: server:OutOfMemoryError"): recording a popped message as held,
requeueing a rejected one, acknowledging one. `QoS` rides such refusals out instead (see
there); nothing it holds is lost, because a refused transaction changes nothing.

A refused BRPOP itself (after a failed AOF write: ``MISCONF``; too few replicas:
``NOREPLICAS``; a replica: ``READONLY``; a server that turned replica under a waiting
BRPOP: ``UNBLOCKED``) escaped the same way and stopped the worker. `Channel` backs off
instead (`ReadRefusals`: 0.5 s doubling to 5 s) and asks again, logging what the refusal
means and what an operator can do (`shared.redis_refusals`). Nothing is lost: a refused
BRPOP pops nothing, so every message stays queued in Redis. The same goes for the queue
bindings the consumer writes when it (re)connects: one Redis already holds is not written
again, one it lacks is asked for again after the same backoff, so a worker reconnecting to
a refusing Redis waits for it instead of exiting.

Used by setting Celery's ``broker_transport`` to ``shared.broker_transport:Transport``
(``:SentinelTransport`` for a Sentinel group; `shared.queue.celery_config`). Publishing is unchanged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from queue import Empty
from time import monotonic
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from shared.broker_envelopes import checked_pop
from shared.redis_client import is_refusal
from shared.redis_refusals import operator_advice, refusal_code

log = logging.getLogger(__name__)


def _refused(exc: redis.ResponseError) -> bool:
    return is_refusal(exc) or isinstance(exc, redis.exceptions.ExecAbortError)


class QoS(kombu_redis.QoS):  # type: ignore[misc]  # kombu ships no type hints
    """kombu's unacked-message bookkeeping, riding out a Redis that refuses writes.

    Each kombu write here is one MULTI/EXEC transaction, which a refusal aborts whole, so:

    - a popped message that cannot be recorded as held is run all the same from memory;
      should this worker die before it is done, the message is lost as in a kill between
      BRPOP and recording, and the stall sweeper sends its upload again;
    - a refused requeue or acknowledgement of a recorded message leaves it held in Redis: it
      is delivered again once older than the visibility timeout (stages are idempotent);
    - a refused requeue of a message held only in memory keeps it there, taking its prefetch
      slot (so the worker stops draining its queue into memory), and is tried again at each
      restore pass (`OMNIBIND_WORKER__UNACKED_RESTORE_INTERVAL_S`);
    - a refused restore of expired holdings is tried again on the next pass.

    Each refusal is one WARNING line starting "Redis refused".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unrecorded: set[str] = set()  # held only in memory: Redis refused to record them
        self._stranded: set[str] = set()  # rejected, but Redis refused to requeue them

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            log.warning(
                "Redis refused to record message %s as held (%s): running it anyway; should this worker die "
                "first, the stall sweeper sends its upload again",
                delivery_tag,
                exc,
            )
            self._unrecorded.add(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self._forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
        else:
            self._forget(delivery_tag)
        if delivery_tag not in self._stranded:
            virtual.QoS.ack(self, delivery_tag)

    def _channel_closed(self) -> bool:
        """Has kombu closed this channel after losing the broker connection? Its pool and its
        connection's address are gone then, and building a client raises AttributeError
        ('NoneType' object has no attribute 'hostname' / 'client'), which Celery takes for
        unrecoverable: the worker exited. A task still running when the connection dropped
        (a Sentinel failover, a Redis restart) acks through this channel when it ends."""
        connection = self.channel.connection
        return connection is None or connection.client is None

    def _forget(self, delivery_tag: str) -> None:
        self._unrecorded.discard(delivery_tag)
        if self._channel_closed():
            log.warning(
                "cannot acknowledge message %s: the broker connection it came on was lost; it is delivered again "
                "after the visibility timeout (stages are idempotent)",
                delivery_tag,
            )
            return
        try:
            self._remove_from_indices(delivery_tag).execute()
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            log.warning(
                "Redis refused to acknowledge message %s (%s): it stays held and is delivered again after the "
                "visibility timeout",
                delivery_tag,
                exc,
            )

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        if client is None and self._channel_closed():
            log.warning(
                "cannot requeue message %s: the broker connection it came on was lost; it is delivered again after "
                "the visibility timeout",
                tag,
            )
            return
        message = self._delivered.get(tag) if tag in self._unrecorded else None  # type: ignore[attr-defined]
        try:
            if message is None:
                super().restore_by_tag(tag, client, leftmost)
            else:
                self._restore_unrecorded(message, client, leftmost)
                self._unrecorded.discard(tag)
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            if message is None:
                log.warning(
                    "Redis refused to requeue message %s (%s): it stays held until the visibility timeout", tag, exc
                )
            elif tag not in self._stranded:
                self._stranded.add(tag)
                log.warning("Redis refused to requeue message %s (%s): kept in memory until Redis takes it", tag, exc)

    def _restore_unrecorded(self, message: Any, client: Any, leftmost: bool) -> None:
        """Requeue a message that Redis never recorded as held, from its copy in memory."""
        delivery = message.delivery_info
        with self.pipe_or_acquire(client=client) as pipe:
            exchange, routing_key = delivery["exchange"], delivery["routing_key"]
            self.channel._do_restore_message(message._raw, exchange, routing_key, pipe, leftmost)
            pipe.execute()

    def restore_unacked(self, client: Any = None) -> None:
        """Requeue what this channel holds when it closes; after a lost broker connection
        (`_channel_closed`) leave it instead: a message held here is recorded in Redis'
        unacked hash, so the visibility timeout brings it back (one Redis refused to record
        is sent again by the stall sweeper)."""
        if not self._channel_closed():
            super().restore_unacked(client)
            return
        held = len(self._delivered)  # type: ignore[attr-defined,arg-type]
        if held:
            log.warning(
                "broker connection lost: %d held message(s) are not requeued now; they are delivered again after "
                "the visibility timeout",
                held,
            )
        self._delivered.clear()  # type: ignore[attr-defined]

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        for tag in list(self._stranded):
            self.restore_by_tag(tag, leftmost=True)
            if tag not in self._unrecorded:  # requeued at last
                self._stranded.discard(tag)
                virtual.QoS.ack(self, tag)
        try:
            super().restore_visible(*args, **kwargs)
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            log.warning("Redis refused to restore expired messages (%s): trying again on the next pass", exc)


READ_BACKOFF_FIRST_S = 0.5
READ_BACKOFF_MAX_S = 5.0
"""A refused queue read is asked again after 0.5, 1, 2, 4, then every 5 s: soon enough that a
worker takes messages within seconds of Redis accepting again, seldom enough not to load it."""
STILL_REFUSED_LOG_EVERY_S = 60.0
BINDINGS_RETRY_S = 60.0


@dataclass
class ReadRefusals:
    """A channel's current run of refused queue reads (BRPOP): when to ask again, and when a
    log line is due (the 1st, 2nd, 4th, 8th... refusal, then at least once a minute)."""

    since_s: float | None = None  # monotonic time of the run's first refusal
    count: int = 0
    retry_at_s: float = 0.0
    logged_at_s: float = 0.0

    def may_read(self, now_s: float) -> bool:
        return now_s >= self.retry_at_s

    def refused(self, now_s: float) -> tuple[float, bool]:
        """Note a refusal at `now_s`: (seconds until the next read, whether to log it)."""
        if self.since_s is None:
            self.since_s = now_s
        self.count += 1
        delay_s = min(READ_BACKOFF_MAX_S, READ_BACKOFF_FIRST_S * 2 ** min(self.count - 1, 16))
        self.retry_at_s = now_s + delay_s
        due = self.count & (self.count - 1) == 0 or now_s - self.logged_at_s >= STILL_REFUSED_LOG_EVERY_S
        if due:
            self.logged_at_s = now_s
        return delay_s, due

    def accepted(self, now_s: float) -> tuple[float, int] | None:
        """Note an accepted read: (seconds refused, refusals) if it ends a run, else None."""
        if self.since_s is None:
            return None
        ended = now_s - self.since_s, self.count
        self.since_s, self.count, self.retry_at_s, self.logged_at_s = None, 0, 0.0, 0.0
        return ended


def _read_refused(exc: redis.ResponseError) -> bool:
    return is_refusal(exc) or refusal_code(exc) == "UNBLOCKED"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel whose BRPOP replies pass through `checked_pop`, whose refused
    BRPOPs are asked again after a backoff (`ReadRefusals`) instead of stopping the worker, and
    whose acknowledgements ride out refused writes (`QoS`)."""

    QoS = QoS
    _refusals: ReadRefusals | None = None
    _bindings_refused_until_s = 0.0

    @property
    def read_refusals(self) -> ReadRefusals:
        if self._refusals is None:
            self._refusals = ReadRefusals()
        return self._refusals

    def _create_client(self, asynchronous: bool = False) -> Any:
        client = super()._create_client(asynchronous)
        client.set_response_callback("BRPOP", checked_pop)
        return client

    def _brpop_start(self, timeout: float | None = None) -> None:
        # While backing off no BRPOP is pending; the poller calls this again on each tick
        # (at least once a second: Celery's timers wake the event loop).
        if self.read_refusals.may_read(monotonic()):
            super()._brpop_start(timeout)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            delivered: bool = super()._brpop_read(**options)
        except Empty:
            self._read_accepted()
            raise
        except redis.ResponseError as exc:
            if not _read_refused(exc):
                raise
            self._read_refused(exc)
            raise Empty() from exc  # nothing was popped: the queues still hold every message
        self._read_accepted()
        return delivered

    def _read_refused(self, exc: redis.ResponseError) -> None:
        refusals = self.read_refusals
        delay_s, log_it = refusals.refused(monotonic())
        if not log_it:
            return
        if refusals.count == 1:
            log.warning(
                "Redis refused to hand out messages (BRPOP: %s): asking again in %.1f s, then backing off to "
                "every %.0f s; the messages stay queued in Redis. %s",
                exc,
                delay_s,
                READ_BACKOFF_MAX_S,
                operator_advice(exc),
            )
        else:
            log.warning(
                "Redis still refused to hand out messages after %.0f s (%d refusals; BRPOP: %s): asking again in "
                "%.1f s. %s",
                monotonic() - (refusals.since_s or 0.0),
                refusals.count,
                exc,
                delay_s,
                operator_advice(exc),
            )

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        refusals = ReadRefusals()
        while True:
            try:
                super()._queue_bind(exchange, routing_key, pattern, queue)
                return
            except redis.ResponseError as exc:
                if not _refused(exc):
                    raise
                if self._bound(exchange, routing_key, pattern, queue):
                    # Under maxmemory, SADD of a member already there is refused too.
                    log.warning("Redis refused to bind queue %s again (%s); it is bound already", queue, exc)
                    return
                delay_s, log_it = refusals.refused(monotonic())
                if log_it:
                    log.warning(
                        "Redis refused to bind queue %s (%s): asking again in %.1f s. %s",
                        queue,
                        exc,
                        delay_s,
                        operator_advice(exc),
                    )
                # Only at (re)connection, before this consumer takes any message.
                time.sleep(delay_s)

    def maybe_refresh_binding_expiry(self) -> None:
        # kombu calls this every second and, when Redis refuses, logs a traceback each time;
        # the bindings it refreshes live an hour at least, so a minute's pause costs nothing.
        now_s = monotonic()
        if now_s < self._bindings_refused_until_s:
            return
        try:
            super().maybe_refresh_binding_expiry()
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            self._bindings_refused_until_s = now_s + BINDINGS_RETRY_S
            log.warning("Redis refused to refresh queue bindings (%s): trying again in %.0f s", exc, BINDINGS_RETRY_S)

    def _bound(self, exchange: str, routing_key: str, pattern: str, queue: str) -> bool:
        """Does Redis hold this binding already? (A read: a refusing Redis still answers it.)"""
        member = self.sep.join([routing_key or "", pattern or "", queue or ""])
        with self.conn_or_acquire() as client:
            members = client.smembers(self.keyprefix_queue % (exchange,))
        return member in {m.decode() if isinstance(m, bytes) else m for m in members}

    def _read_accepted(self) -> None:
        ended = self.read_refusals.accepted(monotonic())
        if ended is not None:
            log.warning("Redis hands out messages again after %.0f s refused (%d refusals)", *ended)


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """`Channel` on kombu's Sentinel channel, which asks the sentinels for the current
    primary at each (re)connect (its pool; everything else is `Channel`'s)."""


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel
