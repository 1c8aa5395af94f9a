"""Chaos: uploads keep arriving while workers of every kind are kill -9-ed and replaced and
redis-server restarts once; afterwards every upload is accounted for exactly once.

CI-sized (240 uploads, about a minute); bench/chaos.py runs the long version."""

from __future__ import annotations

import pytest

from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import run_chaos, synthetic_upload
from tests.support.stack import RunningStack

pytestmark = pytest.mark.integration

UPLOADS = 240


def test_kill_9_of_every_worker_kind_and_a_redis_restart_lose_and_duplicate_nothing(start_stack) -> None:
    # A message sits in a killed worker at most a few times in a run this size; the higher
    # limit keeps chaos from being mistaken for a poison message.
    running: RunningStack = start_stack(worker={**FAST_RECOVERY, "max_deliveries": 8})
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
    assert dict(accounting.statuses) == {"indexed": UPLOADS}, accounting.summary()
