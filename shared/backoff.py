"""Delays between attempts: one formula for every retry loop of ours (Celery task retries,
webhook deliveries, the bridge's consumers), and one loop for every wait that polls until a
deadline (a server answering, a lock freed, room in a queue, workers ready). Redis clients
use redis-py's own backoff."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Past 2**30 the window is far above any cap; the bound keeps the float finite.
_MAX_DOUBLINGS = 30


def exponential_s(attempt: int, base_s: float, max_s: float) -> float:
    """`base_s` doubled per failed attempt (1, 2, ...), capped at `max_s`: the wait after the
    `attempt`-th failure in a row."""
    return min(max_s, base_s * 2 ** min(max(attempt - 1, 0), _MAX_DOUBLINGS))


def full_jitter_s(attempt: int, base_s: float, max_s: float) -> float:
    """Uniform over [0, `exponential_s`]: many clients retrying the same outage spread out
    instead of arriving together ("full jitter")."""
    return random.uniform(0, exponential_s(attempt, base_s, max_s))


def poll(check: Callable[[], T | None], *, timeout_s: float, interval_s: float, jitter: float = 0.0) -> T | None:
    """Call `check` until it returns something other than None, and return that; None when
    it has not by `timeout_s` (it runs at least once, and not again once the deadline has
    passed). Sleeps `interval_s` between calls, stretched by up to `jitter` times itself at
    random so that waiters do not wake in lockstep. What `check` raises passes through."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s * (1.0 + jitter * random.random()) if jitter else interval_s)
