"""A worker rides out a Redis that refuses writes (full under noeviction): it keeps running,
and once Redis has room again every upload it was refused on goes on.

Before: kombu's Redis transport let the refusal of the write that records a popped message
as held, or of the push that requeues a rejected one, escape into Celery's event loop, which
stopped the worker ("Unrecoverable error: server:OutOfMemoryError")."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack, WorkerProcess
from shared.events import UploadStatus
from tests.robustness.support import FAST_RECOVERY
from tests.support.s3_server import free_loopback_port
from tests.support.stack import stack_settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

UPLOADS = 10
REFUSAL_MARK = "Redis refused"  # shared.broker_transport's warnings


def refusals_logged(worker: WorkerProcess) -> int:
    assert worker.log_path is not None
    return worker.log_path.read_text(errors="replace").count(REFUSAL_MARK)


def test_a_cpu_worker_keeps_running_while_redis_refuses_writes(tmp_path: Path, model_cache: Path) -> None:
    settings = stack_settings(tmp_path, model_cache, worker=FAST_RECOVERY)
    (tmp_path / "logs").mkdir()
    with Stack(settings, kinds=("cpu",), log_dir=tmp_path / "logs") as stack:
        worker = stack.workers[0]
        client = Client(settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")}), source="test")
        redis = client.redis
        try:
            # The worker is stopped while the uploads are queued and Redis fills up, so it meets
            # the refusals with messages to take: recording the one it popped as held, then
            # handing each off to the gpu queue and requeueing it.
            stack.kill(worker, signal.SIGSTOP)
            ids = [client.submit_text(f"caption {i}", upload_id=f"full-{i}") for i in range(UPLOADS)]
            redis.config_set("maxmemory-policy", "noeviction")
            redis.config_set("maxmemory", 1)
            stack.kill(worker, signal.SIGCONT)
            wait_until(
                lambda: worker.process.poll() is not None or refusals_logged(worker) >= 2,
                timeout_s=120,
                what="the worker to meet refused writes",
                poll_s=0.2,
            )
            assert worker.process.poll() is None, f"the worker exited:\n{worker.log_tail(60)}"
            redis.config_set("maxmemory", 0)

            def preprocessed() -> bool:
                assert worker.process.poll() is None, f"the worker exited:\n{worker.log_tail(60)}"
                records = [client.status(upload_id) for upload_id in ids]
                return all(r is not None and r.status is UploadStatus.PREPROCESSED for r in records)

            wait_until(preprocessed, timeout_s=120, what="every upload to be preprocessed", poll_s=0.5)
        finally:
            redis.config_set("maxmemory", 0)
            client.close()


QUEUE_READ_REFUSAL_MARK = "Redis refused to hand out messages"  # shared.broker_transport


def _refuse_writes_no_replicas(redis: Any) -> Callable[[], None]:
    """Every write (BRPOP included) is refused with NOREPLICAS: one replica is required and
    none is connected. Returns the undo."""
    redis.config_set("min-replicas-to-write", 1)
    return lambda: redis.config_set("min-replicas-to-write", 0)


def _refuse_writes_read_only(redis: Any) -> Callable[[], None]:
    """The server turns into a read-only replica of a primary that never answers (its data
    stays: a replica replaces it only once a sync succeeds); every write, BRPOP included, is
    refused with READONLY. Returns the undo."""
    redis.execute_command("REPLICAOF", "127.0.0.1", str(free_loopback_port()))
    return lambda: redis.execute_command("REPLICAOF", "NO", "ONE")


@pytest.mark.parametrize(
    ("refuse", "queued_first"),
    [(_refuse_writes_no_replicas, True), (_refuse_writes_read_only, True), (_refuse_writes_read_only, False)],
    ids=["noreplicas-queued", "readonly-queued", "readonly-while-waiting"],
)
def test_a_worker_whose_queue_reads_are_refused_backs_off_and_loses_nothing(
    tmp_path: Path, model_cache: Path, refuse: Callable[[Any], Callable[[], None]], queued_first: bool
) -> None:
    """Uploads queued before Redis turns refusing, or a worker waiting in BRPOP when it does
    (the server answers that BRPOP with UNBLOCKED when it becomes a replica): the worker backs
    off, says why, and takes every message once Redis accepts again.

    Before: the refused BRPOP escaped into Celery's event loop and the worker exited
    ("Unrecoverable error: server:ResponseError"); only a supervisor's restart brought it back."""
    settings = stack_settings(tmp_path, model_cache, worker=FAST_RECOVERY)
    (tmp_path / "logs").mkdir()
    with Stack(settings, kinds=("cpu",), log_dir=tmp_path / "logs") as stack:
        worker = stack.workers[0]
        client = Client(settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")}), source="test")
        redis = client.redis
        undo = lambda: None  # noqa: E731
        ids = [f"refused-{i}" for i in range(UPLOADS)]
        try:
            if queued_first:
                stack.kill(worker, signal.SIGSTOP)  # the uploads wait queued while Redis turns refusing
                for i, upload_id in enumerate(ids):
                    client.submit_text(f"caption {i}", upload_id=upload_id)
            undo = refuse(redis)
            if queued_first:
                stack.kill(worker, signal.SIGCONT)

            def logged(mark: str, times: int = 1) -> bool:
                assert worker.process.poll() is None, f"the worker exited:\n{worker.log_tail(60)}"
                assert worker.log_path is not None
                return worker.log_path.read_text(errors="replace").count(mark) >= times

            # The first refusal is explained; the worker then keeps asking, backing off.
            wait_until(lambda: logged(QUEUE_READ_REFUSAL_MARK), timeout_s=120, what="a refused queue read", poll_s=0.2)
            wait_until(lambda: logged("still refused"), timeout_s=60, what="the worker to keep asking", poll_s=0.2)
            undo()
            undo = lambda: None  # noqa: E731
            if not queued_first:
                for i, upload_id in enumerate(ids):
                    client.submit_text(f"caption {i}", upload_id=upload_id)

            def preprocessed() -> bool:
                assert worker.process.poll() is None, f"the worker exited:\n{worker.log_tail(60)}"
                records = [client.status(upload_id) for upload_id in ids]
                return all(r is not None and r.status is UploadStatus.PREPROCESSED for r in records)

            wait_until(preprocessed, timeout_s=120, what="every upload to be preprocessed", poll_s=0.5)
            assert logged("Redis hands out messages again")
            assert not redis.llen(f"{settings.queue_prefix}:cpu")
        finally:
            undo()
            client.close()
