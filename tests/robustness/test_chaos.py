"""Chaos: uploads keep arriving while workers of every kind are kill -9-ed and replaced and
redis-server restarts once; afterwards every upload is accounted for exactly once.

CI-sized (>= 200 uploads, about a minute); bench/chaos.py runs the long version."""

from __future__ import annotations

import pytest

from tests.support.chaos import run_chaos, synthetic_upload
from tests.support.stack import RunningStack

pytestmark = pytest.mark.integration

UPLOADS = 240
# Short clocks so a killed worker's messages come back within seconds (see docs/robustness.md).
FAST_RECOVERY = {
    "visibility_timeout_s": 10,
    "task_time_limit_s": 4,
    "unacked_restore_interval_s": 1,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 1,
    "max_deliveries": 8,
}


def test_kill_9_of_every_worker_kind_and_a_redis_restart_lose_and_duplicate_nothing(start_stack) -> None:
    running: RunningStack = start_stack(worker=FAST_RECOVERY)
    uploads = [synthetic_upload(i, run="chaos") for i in range(UPLOADS)]

    report = run_chaos(
        running.stack,
        running.client,
        uploads,
        rate_per_s=8,
        kill_every_s=2.5,
        restart_redis_after_kills=5,
        min_kills_per_kind=3,
        finish_timeout_s=180,
        on_event=print,
    )

    accounting = report.accounting
    assert accounting is not None
    print("chaos:", report.as_dict())
    assert not accounting.problems(), accounting.summary()
    assert report.redis_restarts == 1 and min(report.kills.values()) >= 3
    # Every kill is survivable: nothing should have been given up on, except (rarely) an
    # upload whose message sat in a killed worker max_deliveries times.
    assert set(accounting.failure_reasons) <= {"poison_message"}, accounting.summary()
