"""The webhook dispatcher: a consumer group on ``{prefix}:results`` that delivers each result
to its source's target.

A result is acknowledged only after its delivery reached a final outcome (delivered, or
failed after every attempt) and that outcome is in the delivery log; results without a
target are acknowledged at once. A dispatcher killed mid-delivery leaves the result pending:
the same consumer re-reads it at restart, another takes it over after `reclaim_idle_s`.
Deliveries run in a thread pool (`concurrency` at once), so one slow target does not hold
up the others until the pool is full.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from pydantic import ValidationError

from producers.bridge.stream_group import ClaimSchedule, Entry, StreamGroup
from producers.webhooks.delivery_log import DeliveryLog
from producers.webhooks.sender import DeliveryInterrupted, WebhookSender
from producers.webhooks.targets import Delivery, build_delivery
from shared.config import WebhookSettings
from shared.errors import TransientError
from shared.logs import upload_context
from shared.status import StatusStore
from shared.streams import ResultEntry, parse_result_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchTiming:
    block_ms: int = 2000
    batch_size: int = 100


class WebhookDispatcher:
    name = "webhooks"

    def __init__(
        self,
        group: StreamGroup,
        statuses: StatusStore,
        sender: WebhookSender,
        delivery_log: DeliveryLog,
        settings: WebhookSettings,
        timing: DispatchTiming = DispatchTiming(),
    ) -> None:
        self._group = group
        self._statuses = statuses
        self._sender = sender
        self._log = delivery_log
        self._settings = settings
        self._timing = timing
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="webhook")
        self._in_flight: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._claims = ClaimSchedule(interval_s=max(1.0, settings.reclaim_idle_s / 2))
        self._own_pending = True
        self._fatal: BaseException | None = None

    def start(self) -> None:
        self._group.ensure("$" if self._settings.start_from == "new" else "0")
        self._own_pending = True

    def poll(self) -> int:
        """Start deliveries for the next results (waiting up to `block_ms` when idle or when
        every delivery slot is busy); returns how many results were taken.

        Raises `TransientError` (Redis down; unhandled results stay pending and are read
        again) or whatever stopped a delivery thread for good.
        """
        if self._fatal is not None:
            raise self._fatal
        free = self._settings.concurrency - len(self._in_flight)
        if free <= 0:
            wait(list(self._in_flight.values()), timeout=self._timing.block_ms / 1000, return_when=FIRST_COMPLETED)
            return 0
        # Taken before reading: a delivery that ends during the read has left `_in_flight`
        # when the read returns, yet was still pending when Redis answered.
        with self._lock:
            busy = set(self._in_flight)
        try:
            entries = [entry for entry in self._next_batch(free, busy) if entry[0] not in self._in_flight]
            for entry_id, fields in entries:
                self._dispatch(entry_id, fields)
        except BaseException:
            self._own_pending = True
            raise
        return len(entries)

    def close(self) -> None:
        """Wait for the deliveries in flight (they end quickly once the stop event is set)."""
        self._pool.shutdown(wait=True)

    def _next_batch(self, free: int, busy: set[str]) -> list[Entry]:
        """Up to `free` entries to deliver, none of `busy` (in flight when the read began)."""
        if self._own_pending:
            entries = [e for e in self._group.read_own_pending(free + len(busy)) if e[0] not in busy]
            if entries:
                return entries[:free]
            self._own_pending = False
        now_s = time.monotonic()
        if self._claims.due(now_s):
            min_idle_ms = int(self._settings.reclaim_idle_s * 1000)
            cursor, entries = self._group.claim_stale(min_idle_ms, self._claims.cursor, free)
            self._claims.advance(cursor, now_s)
            entries = [e for e in entries if e[0] not in busy]
            if entries:
                return entries
        return self._group.read_new(min(free, self._timing.batch_size), self._timing.block_ms)

    def _dispatch(self, entry_id: str, fields: object) -> None:
        if not fields:
            self._group.ack(entry_id)  # trimmed from the stream: nothing left to deliver
            return
        try:
            entry = parse_result_entry(entry_id, fields)  # type: ignore[arg-type]
        except (KeyError, ValueError, ValidationError) as exc:
            log.error("results entry %s is not a result (%s); skipped", entry_id, exc)
            self._group.ack(entry_id)
            return
        delivery = self._delivery_of(entry)
        if delivery is None:
            self._group.ack(entry_id)
            return
        with self._lock:
            future = self._pool.submit(self._deliver, entry_id, delivery)
            self._in_flight[entry_id] = future
        future.add_done_callback(lambda done: self._finished(entry_id, done))

    def _delivery_of(self, entry: ResultEntry) -> Delivery | None:
        record = self._statuses.get(entry.result.upload_id)
        source = record.source if record else None
        tenant = record.tenant if record else None
        return build_delivery(entry, source, tenant, self._settings.targets)

    def _deliver(self, entry_id: str, delivery: Delivery) -> None:
        with upload_context(delivery.upload_id):
            outcome = self._sender.deliver(delivery)
            self._log.record(delivery, outcome)
            self._group.ack(entry_id)
            if outcome.delivered:
                log.info(
                    "webhook %s delivered to %s (%d attempts)",
                    delivery.delivery_id,
                    delivery.target_name,
                    outcome.attempts,
                )
            else:
                log.warning(
                    "webhook %s to %s failed after %d attempts: %s",
                    delivery.delivery_id,
                    delivery.target_name,
                    outcome.attempts,
                    outcome.last_error,
                )

    def _finished(self, entry_id: str, done: Future[None]) -> None:
        with self._lock:
            self._in_flight.pop(entry_id, None)
        error = done.exception()
        if error is None or isinstance(error, DeliveryInterrupted):
            return
        # The result stays pending: read it again (a duplicate delivery at worst).
        self._own_pending = True
        if isinstance(error, TransientError):
            log.warning("webhook %s: %s; it will be delivered again", entry_id, error)
        else:
            log.error("webhook delivery thread failed", exc_info=error)
            self._fatal = error
