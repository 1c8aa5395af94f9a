"""Object storage goes away during a run (the S3 server process is stopped, then started
again on the same port). Uploads caught by a short outage are retried with backoff and end
indexed; uploads that outlast their retry budget end dead-lettered, and
`omnibind dead --retry` brings them home once storage is back.

Moto keeps objects in memory, so the restarted server is empty: the test puts the objects
back (as MinIO would have kept them on disk) while the CPU worker is paused, so that no
retry meets the server in between."""

from __future__ import annotations

import contextlib
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
from shared.streams import DeliveryCounter
from tests.robustness.support import FAST_RECOVERY, wait_for
from tests.support.chaos import account
from tests.support.s3_server import RestartableS3Server
from tests.support.stack import RunningStack

pytestmark = pytest.mark.integration

BUCKET = "outage"
MAX_RETRIES = 12  # ~5 s of backoff in all with the fast clocks: outlasted on purpose in phase A


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
        worker={**FAST_RECOVERY, "max_retries": MAX_RETRIES},
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
    assert {(letter.stage, letter.error_class, letter.attempts) for letter in letters} == {
        ("preprocess", "StorageUnavailable", MAX_RETRIES + 1)
    }
    # B: storage comes back once each upload has failed and been retried at least once.
    for event in short_outage:
        client.enqueue(event)
    deliveries = DeliveryCounter(client.redis, running.settings.queue_prefix)
    wait_for(
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
