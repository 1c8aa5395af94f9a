"""With OMNIBIND_REDIS__WAIT_REPLICAS, a submission is confirmed only once its status record
is on a replica (a real Sentinel group: primary, replica, three sentinels); one a replica does
not acknowledge in time is refused, sends nothing, and its retry joins the run it recorded."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from producers.client import Client
from shared.config import Settings
from shared.events import Modality, UploadEvent, UploadStatus
from shared.redis_client import RedisUnavailable
from shared.replication import NotReplicated
from tests.support.sentinel import SentinelGroup

pytestmark = pytest.mark.integration


def client_for(group: SentinelGroup, tmp_path: Path, replicas: int) -> Client:
    settings = Settings(
        redis_url=group.url, data_dir=tmp_path / "data", redis={"wait_replicas": replicas, "wait_timeout_ms": 1000}
    )
    return Client(settings, source="test")


def test_a_confirmed_submission_is_on_the_replica(sentinel_group: SentinelGroup, tmp_path: Path) -> None:
    with client_for(sentinel_group, tmp_path, 1) as client:
        client.submit_text("hello", upload_id="u-1")
    (replica,) = sentinel_group.replicas()
    assert replica.client().hget("omnibind:upload:u-1", "status") == UploadStatus.QUEUED.value
    assert replica.client().llen("omnibind:cpu") == 1


def test_an_unreplicated_submission_is_refused_and_its_retry_joins_the_recorded_run(
    sentinel_group: SentinelGroup, tmp_path: Path
) -> None:
    (replica,) = sentinel_group.replicas()
    primary = sentinel_group.primary().client()
    with client_for(sentinel_group, tmp_path, 1) as client:
        os.kill(replica.process.pid, signal.SIGSTOP)  # stops acknowledging replication
        try:
            with pytest.raises(RedisUnavailable, match="0 of 1"):
                client.submit_text("hello", upload_id="u-2")
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        # Recorded, not sent: no run can finish before the producer's retry.
        assert primary.hget("omnibind:upload:u-2", "status") == UploadStatus.QUEUED.value
        assert primary.llen("omnibind:cpu") == 0
        start = client.enqueue_run(client_event(client, "u-2"))
        assert (start.started, start.run) == (False, 1)
        assert primary.llen("omnibind:cpu") == 0  # the stall sweeper sends the recorded run
    assert replica.client().hget("omnibind:upload:u-2", "status") == UploadStatus.QUEUED.value


def test_without_wait_replicas_nothing_waits(sentinel_group: SentinelGroup, tmp_path: Path) -> None:
    (replica,) = sentinel_group.replicas()
    with client_for(sentinel_group, tmp_path, 0) as client:
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            client.submit_text("hello", upload_id="u-3")
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
    assert sentinel_group.primary().client().llen("omnibind:cpu") == 1


def client_event(client: Client, upload_id: str) -> UploadEvent:
    return UploadEvent(id=upload_id, text="hello", modality=Modality.TEXT, source=client.source)


def test_a_refused_confirmation_keeps_its_quota_reservation_the_run_stands(
    sentinel_group: SentinelGroup, tmp_path: Path
) -> None:
    (replica,) = sentinel_group.replicas()
    settings = Settings(
        redis_url=sentinel_group.url,
        data_dir=tmp_path / "data",
        redis={"wait_replicas": 1, "wait_timeout_ms": 1000},
        quotas={"uploads_per_day": 10},
    )
    with Client(settings, source="test") as client:
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(NotReplicated):
                client.submit_text("hello", upload_id="u-4", tenant="acme")
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        assert client.quotas.usage("acme")[0] == 1  # refunded before: a run no quota counted
        client.submit_text("hello", upload_id="u-4", tenant="acme")  # the retry joins the run
        assert client.quotas.usage("acme")[0] == 1
