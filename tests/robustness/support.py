"""What the robustness tests share: short clocks, so that recovering a killed worker's
messages takes seconds instead of minutes (docs/robustness.md explains each setting), and a
polling helper."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

FAST_RECOVERY: dict[str, Any] = {
    "visibility_timeout_s": 10,  # a killed worker's messages come back after this
    "task_time_limit_s": 4,
    "unacked_restore_interval_s": 1,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 1,
    "stall_timeout_s": 12,  # a message lost in a crash is sent again after this
    "sweep_interval_s": 2,
}


def wait_for(condition: Callable[[], T], *, timeout_s: float, what: str, poll_s: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy (returned); AssertionError naming
    `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)
