"""Running consumers (the bridge's, the webhook dispatcher's) until asked to stop.

Each consumer polls in its own thread. A `TransientError` (Redis or the broker down) backs
off exponentially and polls again — the consumer's own bookkeeping makes sure the work in
hand is not lost. Anything else (`ConfigError`, a bug in the loop itself) stops every
consumer and is raised to the caller, so the process exits non-zero and its supervisor
(compose, systemd) restarts it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from shared.backoff import exponential_s
from shared.errors import TransientError

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
_STOP_CHECK_S = 0.5


class Consumer(Protocol):
    name: str

    def start(self) -> None:
        """Prepare (create groups...); called again after a transient failure of `start`."""

    def poll(self) -> int:
        """Handle what is there (blocking briefly when idle); returns how much was handled."""
        ...


def retry_delay_s(failures: int, base_s: float = BACKOFF_BASE_S, max_s: float = BACKOFF_MAX_S) -> float:
    """Exponential backoff after `failures` consecutive failures (1, 2, ...)."""
    return exponential_s(failures, base_s, max_s)


def run_consumer(consumer: Consumer, stop: threading.Event) -> None:
    """Poll `consumer` until `stop` is set; transient failures back off and retry."""
    failures = 0
    started = False
    while not stop.is_set():
        try:
            if not started:
                consumer.start()
                started = True
            consumer.poll()
            failures = 0
        except TransientError as exc:
            failures += 1
            delay_s = retry_delay_s(failures)
            log.warning("%s: %s (%s); retrying in %.1f s", consumer.name, exc.reason, exc.message, delay_s)
            stop.wait(delay_s)


def run_consumers(consumers: Sequence[Consumer], stopping: Callable[[], bool], stop: threading.Event) -> None:
    """Run every consumer in a thread until `stopping()` returns True or one fails for good.

    Returns after all threads ended; re-raises the first failure.
    """
    failures: list[BaseException] = []

    def run(consumer: Consumer) -> None:
        try:
            run_consumer(consumer, stop)
        except BaseException as exc:
            log.exception("%s stopped", consumer.name)
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=(c,), name=c.name, daemon=True) for c in consumers]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if stopping():
            stop.set()
        for thread in threads:
            thread.join(timeout=_STOP_CHECK_S / len(threads))
    if failures:
        raise failures[0]
