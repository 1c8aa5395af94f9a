"""Hostile input through the whole pipeline, on one stack (real workers, S3-compatible object
store, passwords and keys set everywhere):

- every kind of bad file (tests/robustness/hostile_files.py builds them) ends ``failed``
  with its own reason; the workers keep their pids; the CPU worker's memory stays bounded;
- legal but alarming files (thousands of GIF frames, a mislabelled PNG) are indexed;
- hostile object keys in events are refused by the adapter;
- a pickled message on the queue is refused, never unpickled;
- no secret appears in any log.
"""

from __future__ import annotations

import base64
import os
import pickle
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel, SecretStr

from producers.client import Client
from producers.stack import Stack, WorkerProcess
from shared.config import Settings
from shared.events import Modality, ObjectRef, UploadEvent, UploadStatus
from tests.robustness.hostile_files import HOSTILE_LIMITS, TOLERATED, hostile_cases
from tests.support.chaos import peak_rss_bytes, worker_tree
from tests.support.s3_server import S3Server
from tests.support.stack import RunningStack, stack_settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Peak resident memory any CPU worker process may reach while chewing on the whole hostile
# suite. Measured: ~270 MB per pool process (torch imported, idle ~250 MB), main process
# ~290 MB. The bound is generous on purpose (a different machine, a different numpy), yet
# far below what a decompression bomb would take: 10^10 pixels x 3 bytes = 30 GB.
PEAK_RSS_BOUND_BYTES = 1024 * 1024 * 1024
SECRET_NAME = re.compile(r"password|secret|api_key|access_key|token|redis_url")
SECRETS = {
    "redis password": f"redis-pw-{secrets.token_hex(8)}",
    "object store access key": f"AKIA{secrets.token_hex(8).upper()}",
    "object store secret key": f"s3-secret-{secrets.token_hex(12)}",
    "weaviate api key": f"wv-key-{secrets.token_hex(12)}",
}


@pytest.fixture(scope="module")
def hostile_stack(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, s3_server: S3Server
) -> Iterator[RunningStack]:
    """One stack for the whole module (starting one costs ~15 s)."""
    root = tmp_path_factory.mktemp("hostile")
    settings = stack_settings(
        root,
        model_cache,
        limits=HOSTILE_LIMITS,
        redis={"embedded_password": SECRETS["redis password"]},
        objects=s3_server.object_settings(
            bucket="hostile-input",
            access_key=SECRETS["object store access key"],
            secret_key=SECRETS["object store secret key"],
            retries=0,
        ),
        vectors={"api_key": SECRETS["weaviate api key"]},
        log_level="DEBUG",  # the most a deployment could log
    )
    log_dir = root / "logs"
    log_dir.mkdir()
    stack = Stack(settings, log_dir=log_dir).start(ready_timeout_s=180)
    connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
    client = Client(connected, source="hostile-test")
    try:
        yield RunningStack(stack, connected, client)
    finally:
        client.close()
        stack.stop()


def _pids(workers: list[WorkerProcess]) -> dict[str, set[int]]:
    return {worker.kind: {p.pid for p in worker_tree(worker)} for worker in workers}


def test_every_kind_of_hostile_upload_fails_with_its_reason_and_the_workers_survive(
    hostile_stack: RunningStack,
) -> None:
    client, stack = hostile_stack.client, hostile_stack.stack
    pids_before = _pids(stack.workers)
    expected: dict[str, str] = {}
    for case in hostile_cases():
        upload_id = f"hostile-{case.kind}"
        client.submit(
            case.data,
            upload_id=upload_id,
            filename=case.filename,
            content_type=case.content_type,
            modality=case.modality,
        )
        expected[upload_id] = case.reason
    # Hostile events rather than files: keys that try to leave their bucket, and inline text.
    for kind, key in {"key_dot_dot": "../../etc/passwd", "key_absolute": "/etc/passwd", "key_nul": "a\x00b"}.items():
        event = UploadEvent(id=f"hostile-{kind}", object=ObjectRef(bucket="hostile-input", key=key), source="test")
        expected[client.enqueue(event)] = "invalid_key"
    long_text = "word " * HOSTILE_LIMITS["max_text_chars"]
    expected[client.submit_text(long_text, upload_id="hostile-inline_text_over_limit")] = "text_too_long"

    finished = client.wait(list(expected), timeout_s=180)

    got = {upload_id: (record.status.value, record.error_reason) for upload_id, record in finished.items()}
    width = max(map(len, expected))
    print(f"\n{len(expected)} kinds of hostile upload:")
    for upload_id in expected:
        print(f"  {upload_id:<{width}}  {got.get(upload_id, ('unfinished', None))}")
    assert len(expected) >= 25
    assert got == {upload_id: ("failed", reason) for upload_id, reason in expected.items()}
    letters = {letter.upload_id: letter for letter in client.dead_letters.entries(1000) if letter.upload_id in expected}
    assert {upload_id: (letter.reason, letter.attempts) for upload_id, letter in letters.items()} == {
        upload_id: (reason, 1) for upload_id, reason in expected.items()
    }, "each dead-lettered on its first delivery: permanent errors are never retried"
    assert _pids(stack.workers) == pids_before, "no worker process died or was replaced"
    cpu = next(w for w in stack.workers if w.kind == "cpu")
    peaks = {p.pid: peak_rss_bytes(p.pid) for p in worker_tree(cpu)}
    print("peak RSS of the cpu worker's processes (MB):", {pid: peak >> 20 for pid, peak in peaks.items()})
    assert max(peaks.values()) < PEAK_RSS_BOUND_BYTES


def test_legal_but_alarming_uploads_are_indexed(hostile_stack: RunningStack) -> None:
    client = hostile_stack.client
    ids = {}
    for kind, build in TOLERATED.items():
        data, content_type = build()
        ids[kind] = client.submit(
            data, upload_id=f"tolerated-{kind}", filename=f"{kind}.bin", content_type=content_type
        )

    finished = client.wait(list(ids.values()), timeout_s=120)

    assert {kind: finished[upload_id].status for kind, upload_id in ids.items()} == dict.fromkeys(
        ids, UploadStatus.INDEXED
    )
    records = {r.upload_id: r for r in client.vectors.iter_records() if r.upload_id in ids.values()}
    assert records[ids["animated_gif_3000_frames"]].modality is Modality.IMAGE
    mislabelled = records[ids["png_labelled_as_jpeg"]]
    assert mislabelled.content_type == "image/png", "the content decides; the declared image/jpeg is recorded only"


class Exploit:
    """Unpickling this creates `marker`: what a pickled message could make a worker run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_message_on_the_queue_is_refused_and_never_run(hostile_stack: RunningStack, tmp_path: Path) -> None:
    client, stack = hostile_stack.client, hostile_stack.stack
    proof, marker = tmp_path / "proof", tmp_path / "pwned"
    pickle.loads(pickle.dumps(Exploit(proof)))
    assert proof.exists(), "the payload is live: unpickling it runs a command"
    pids_before = _pids(stack.workers)

    client.celery.send_task("omnibind.preprocess", args=[Exploit(marker)], serializer="pickle", queue="cpu")
    cpu = next(w for w in stack.workers if w.kind == "cpu")
    assert cpu.log_path is not None
    wait_until(
        lambda: "untrusted content of type pickle" in cpu.log_path.read_text(errors="replace"),
        timeout_s=60,
        what="the cpu worker to refuse the message",
    )
    # Unpickling runs the `touch` at once, in the process that decodes: had the worker decoded
    # the message before refusing it, the marker would exist by now. No wait needed.
    assert not marker.exists()
    assert client.redis.llen("omnibind:cpu") == 0, "refused and dropped, not left to loop"
    assert _pids(stack.workers) == pids_before


def test_no_secret_appears_in_any_log(hostile_stack: RunningStack, tmp_path: Path) -> None:
    client = hostile_stack.client
    # Work of every kind first, so that the logs hold success and failure paths of every
    # stage (at DEBUG: object store requests, Redis commands, Celery internals).
    done = client.wait(
        [
            client.submit(b"a stored text about secrets", upload_id="secrets-ok", filename="ok.txt"),
            client.submit(os.urandom(512), upload_id="secrets-bad", filename="bad.bin"),
            client.submit_text("an inline text", upload_id="secrets-inline"),
        ],
        timeout_s=120,
    )
    assert [done[i].status.value for i in ("secrets-ok", "secrets-bad", "secrets-inline")] == [
        "indexed",
        "failed",
        "indexed",
    ]
    # A CLI run too, at DEBUG: it connects to Redis with the password.
    cli = subprocess.run(
        [sys.executable, "-m", "producers.cli", "--log-level", "DEBUG", "status"],
        env=hostile_stack.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    stack = hostile_stack.stack
    assert stack.log_dir is not None and stack.redis is not None
    logs = {path.name: path.read_bytes() for path in sorted(stack.log_dir.glob("*.log"))}
    logs["redis.log"] = stack.redis.log_path.read_bytes()
    logs["omnibind status"] = (cli.stdout + cli.stderr).encode()
    scanned = b"".join(logs.values())
    assert b"failed permanently" in scanned and b"indexed text" in scanned and b"DEBUG" in scanned

    leaks = [
        f"{what} in {name}"
        for name, text in logs.items()
        for what, value in SECRETS.items()
        for form in (value.encode(), base64.b64encode(value.encode()))
        if form in text
    ]
    assert not leaks


def _secret_like_fields(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every setting whose name says it holds a secret, with its annotation."""
    found: dict[str, object] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= _secret_like_fields(annotation, f"{prefix}{name}.")
        elif SECRET_NAME.search(name):
            found[prefix + name] = annotation
    return found


def test_settings_that_hold_secrets_are_secret_strings() -> None:
    fields = _secret_like_fields(Settings)
    assert {"redis_url", "redis.embedded_password", "objects.secret_key", "vectors.api_key"} <= fields.keys()
    assert {name: annotation for name, annotation in fields.items() if SecretStr not in get_args(annotation)} == {}


def test_every_secret_setting_is_masked(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        redis_url=f"redis://:{SECRETS['redis password']}@h:1/0",
        redis={"embedded_password": SECRETS["redis password"]},
        objects={"access_key": SECRETS["object store access key"], "secret_key": SECRETS["object store secret key"]},
        vectors={"api_key": SECRETS["weaviate api key"]},
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert not [what for what, value in SECRETS.items() if value in shown]
