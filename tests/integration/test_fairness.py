"""Fair queues with the embedded stack (real redis-server, real Celery worker processes, the
tiny model): the cpu workers' dispatcher feeds every upload to the pipeline, a tenant that
submits after another's burst is served in turn instead of after the whole burst, and
uploads without a tenant (a single-tenant setup) go through as before."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events import UploadEvent, UploadStatus
from shared.redis_keys import RedisKeys

pytestmark = pytest.mark.integration


def test_a_burst_of_one_tenant_does_not_hold_back_another_and_everything_is_indexed(start_stack: Any) -> None:
    running = start_stack(fairness={"enabled": True, "window": 2})
    client = running.client
    burst = [client.enqueue(UploadEvent(id=f"a-{n}", text=f"acme note {n}", tenant="acme")) for n in range(24)]
    trickle = [client.enqueue(UploadEvent(id=f"b-{n}", text=f"beta note {n}", tenant="beta")) for n in range(3)]
    alone = [client.enqueue(UploadEvent(id=f"n-{n}", text=f"plain note {n}")) for n in range(3)]

    records = client.wait(burst + trickle + alone, timeout_s=180)

    assert {upload_id: r.status for upload_id, r in records.items()} == dict.fromkeys(
        burst + trickle + alone, UploadStatus.INDEXED
    )

    def started(upload_id: str) -> Any:
        return records[upload_id].timestamps[UploadStatus.PREPROCESSED]

    # FIFO would preprocess beta's uploads after all of acme's; in turns, before acme's last ones.
    assert max(started(u) for u in trickle) < sorted(started(u) for u in burst)[-4]
    assert max(started(u) for u in alone) < sorted(started(u) for u in burst)[-4]
    keys = RedisKeys(running.settings.queue_prefix)
    assert client.fair_queue.waiting() == 0 and client.redis.hlen(keys.fair_dispatching) == 0
