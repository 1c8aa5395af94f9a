"""What the robustness tests share: short clocks, so that recovering a killed worker's
messages takes seconds instead of minutes (docs/robustness.md explains each setting)."""

from __future__ import annotations

from typing import Any

FAST_RECOVERY: dict[str, Any] = {
    "visibility_timeout_s": 10,  # a killed worker's messages come back after this
    "task_time_limit_s": 4,
    "unacked_restore_interval_s": 1,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 1,
    "stall_timeout_s": 12,  # a message lost in a crash is sent again after this
    "sweep_interval_s": 2,
}
