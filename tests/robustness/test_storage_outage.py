"""Object storage goes away during a run (the S3 server process is stopped, then started
again on the same port). Uploads caught by an outage shorter than `retry_for_s` are retried
with backoff and end indexed, however many attempts that takes; uploads that outlast it end
dead-lettered, and either the sweeper re-drives them once storage answers again, or (re-drive
off) `omnibind dead --retry` brings them home.

Moto keeps objects in memory, so the restarted server is empty: the test puts the objects
back (as MinIO would have kept them on disk) while the CPU worker is paused, so that no
retry meets the server in between."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings
from shared.events import ObjectRef, Stage, UploadEvent, UploadStatus
from shared.objects.factory import open_object_store
from shared.status import StatusRecord
from shared.streams import DeliveryCounter
from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import account
from tests.support.s3_server import RestartableS3Server
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

BUCKET = "outage"
RETRY_FOR_S = 3  # outlasted on purpose in phase A
# With the fast clocks (backoff 0.2 s doubling to 1 s, full jitter) the former count budget,
# 10 retries, gave up after ~4 s of outage: 11 deliveries.
OLD_COUNT_BUDGET_DELIVERIES = 11


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[RestartableS3Server]:
    with RestartableS3Server(tmp_path) as server:
        yield server


def put_blobs(settings: Settings, blobs: dict[str, bytes]) -> dict[str, ObjectRef]:
    """Store `blobs` (key -> bytes) with a fresh adapter (it creates the bucket if missing)."""
    store = open_object_store(settings)
    try:
        return {key: store.put(BUCKET, key, data, content_type="text/plain") for key, data in blobs.items()}
    finally:
        store.close()


@contextlib.contextmanager
def paused(running: RunningStack, kind: str) -> Iterator[None]:
    """SIGSTOP a worker's process group for the block (a second or so: far below the
    visibility timeout, so nothing it holds is handed to anyone else)."""
    worker = next(w for w in running.stack.workers if w.kind == kind)
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)


def events_for(refs: dict[str, ObjectRef], prefix: str) -> list[UploadEvent]:
    return [UploadEvent(id=f"{prefix}-{i}", object=ref, source="test") for i, ref in enumerate(refs.values())]


def test_uploads_survive_an_object_storage_outage_or_come_back_from_the_dead_letters(
    start_stack, storage: RestartableS3Server
) -> None:
    running: RunningStack = start_stack(
        worker={**FAST_RECOVERY, "retry_for_s": RETRY_FOR_S, "redrive_max": 0},
        objects=storage.server.object_settings(bucket=BUCKET, retries=0, connect_timeout_s=1),
    )
    client = running.client
    blobs = {f"doc-{i}.txt": f"document {i} about storage outages".encode() for i in range(12)}
    refs = put_blobs(running.settings, blobs)
    beyond_budget = events_for(dict(list(refs.items())[:6]), "long-outage")
    short_outage = events_for(dict(list(refs.items())[6:]), "short-outage")

    storage.stop()
    # A: storage stays away until every retry is used up.
    for event in beyond_budget:
        client.enqueue(event)
    failed = client.wait([e.id for e in beyond_budget], timeout_s=120)
    assert {r.status for r in failed.values()} == {UploadStatus.FAILED}
    assert {r.error_reason for r in failed.values()} == {"storage_unavailable"}
    letters = client.dead_letters.entries()
    assert sorted(letter.upload_id or "" for letter in letters) == sorted(e.id for e in beyond_budget)
    assert {(letter.stage, letter.error_class) for letter in letters} == {("preprocess", "StorageUnavailable")}
    assert min(letter.attempts for letter in letters) >= 2, "retried before giving up"
    # B: storage comes back once each upload has failed and been retried at least once.
    for event in short_outage:
        client.enqueue(event)
    deliveries = DeliveryCounter(client.redis, running.settings.queue_prefix)
    wait_until(
        lambda: all(deliveries.deliveries(e.id, Stage.PREPROCESS) >= 2 for e in short_outage),
        timeout_s=60,
        what="every upload to be retried",
    )
    assert client.statuses.counts()[UploadStatus.FAILED] == len(beyond_budget), "none of B gave up"
    with paused(running, "cpu"):  # so that no retry meets moto before its data is back
        storage.start()
        put_blobs(running.settings, blobs)  # what MinIO would have kept on disk
    retried = client.wait([e.id for e in short_outage], timeout_s=120)
    assert {r.status for r in retried.values()} == {UploadStatus.INDEXED}, "retried with backoff until storage returned"

    dead = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dead", "--retry"],
        env=running.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dead.returncode == 0, dead.stdout + dead.stderr
    assert f"requeued {len(beyond_budget)}" in dead.stderr
    home = client.wait([e.id for e in beyond_budget], timeout_s=120)

    assert {r.status for r in home.values()} == {UploadStatus.INDEXED}
    assert {r.run for r in home.values()} == {2}
    assert client.dead_letters.length() == 0
    accounting = account(client, [e.id for e in beyond_budget + short_outage])
    assert dict(accounting.statuses) == {"indexed": len(blobs)}
    assert dict(accounting.records_per_indexed) == {1: len(blobs)}
    assert accounting.stray_records == 0
    # One result per run: failed then indexed for A, indexed for B.
    assert dict(accounting.result_events) == {2: len(beyond_budget), 1: len(short_outage)}


def restore_storage(running: RunningStack, storage: RestartableS3Server, blobs: dict[str, bytes]) -> None:
    """Start the S3 server again with its objects (what MinIO would have kept on disk),
    while the CPU worker is paused so that no retry meets it empty."""
    with paused(running, "cpu"):
        storage.start()
        put_blobs(running.settings, blobs)


def test_an_outage_longer_than_the_former_retry_count_ends_indexed_within_retry_for_s(
    start_stack, storage: RestartableS3Server
) -> None:
    running: RunningStack = start_stack(
        worker={**FAST_RECOVERY, "retry_for_s": 30, "redrive_max": 0},  # the deadline alone must do it
        objects=storage.server.object_settings(bucket=BUCKET, retries=0, connect_timeout_s=1),
    )
    client = running.client
    blobs = {f"doc-{i}.txt": f"document {i} about a long outage".encode() for i in range(8)}
    events = events_for(put_blobs(running.settings, blobs), "outage")

    storage.stop()
    for event in events:
        client.enqueue(event)
    deliveries = DeliveryCounter(client.redis, running.settings.queue_prefix)
    wait_until(
        lambda: all(deliveries.deliveries(e.id, Stage.PREPROCESS) > OLD_COUNT_BUDGET_DELIVERIES for e in events),
        timeout_s=25,
        what="every upload to outlive the former count budget",
    )
    assert client.statuses.counts()[UploadStatus.FAILED] == 0, "none gave up inside retry_for_s"
    restore_storage(running, storage, blobs)
    done = client.wait([e.id for e in events], timeout_s=120)

    assert {r.status for r in done.values()} == {UploadStatus.INDEXED}
    assert client.dead_letters.length() == 0
    accounting = account(client, [e.id for e in events])
    assert dict(accounting.records_per_indexed) == {1: len(events)}
    assert dict(accounting.result_events) == {1: len(events)}


def test_uploads_dead_lettered_by_an_outage_are_redriven_once_storage_answers(
    start_stack, storage: RestartableS3Server
) -> None:
    running: RunningStack = start_stack(
        worker={**FAST_RECOVERY, "retry_for_s": 1, "redrive_max": 2},
        objects=storage.server.object_settings(bucket=BUCKET, retries=0, connect_timeout_s=1),
    )
    client = running.client
    blobs = {f"doc-{i}.txt": f"document {i} dead-lettered by an outage".encode() for i in range(6)}
    events = events_for(put_blobs(running.settings, blobs), "redrive")

    storage.stop()
    for event in events:
        client.enqueue(event)
    failed = client.wait([e.id for e in events], timeout_s=60)
    assert {r.error_reason for r in failed.values()} == {"storage_unavailable"}
    assert client.dead_letters.length() == len(events)
    # The sweeper probes storage meanwhile and re-drives nothing while it is down.
    prefix = running.settings.queue_prefix
    wait_until(lambda: client.redis.exists(f"{prefix}:dead:redrive-lock"), timeout_s=30, what="a re-drive pass")
    assert client.dead_letters.length() == len(events)

    restore_storage(running, storage, blobs)

    def all_indexed() -> list[StatusRecord | None] | None:
        records = [client.status(e.id) for e in events]
        return records if all(r is not None and r.status is UploadStatus.INDEXED for r in records) else None

    home = wait_until(
        all_indexed,
        timeout_s=120,
        what="every upload to be re-driven and indexed",
        poll_s=0.2,
    )

    assert {r.run for r in home if r is not None} == {2}
    assert client.dead_letters.length() == 0
    assert all(int(client.redis.get(f"{prefix}:redrives:{e.id}") or 0) == 1 for e in events)
    accounting = account(client, [e.id for e in events])
    assert dict(accounting.records_per_indexed) == {1: len(events)}
    assert dict(accounting.result_events) == {2: len(events)}  # failed, then indexed
    counted = wait_until(
        lambda: client.redis.hget(
            f"{prefix}:metrics:omnibind_dead_letters_redriven", json.dumps(["storage_unavailable"])
        ),
        timeout_s=30,
        what="the re-drive metric",
    )
    assert int(counted) == len(events)
