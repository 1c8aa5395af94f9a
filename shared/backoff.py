"""Delays between attempts, one formula for every retry loop of ours (Celery task retries,
webhook deliveries, the bridge's consumers). Redis clients use redis-py's own backoff."""

from __future__ import annotations

import random

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
