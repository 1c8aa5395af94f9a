"""A worker rides out a Redis that refuses writes (full under noeviction): it keeps running,
and once Redis has room again every upload it was refused on goes on.

Before: kombu's Redis transport let the refusal of the write that records a popped message
as held, or of the push that requeues a rejected one, escape into Celery's event loop, which
stopped the worker ("Unrecoverable error: server:OutOfMemoryError")."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack, WorkerProcess
from shared.events import UploadStatus
from tests.robustness.support import FAST_RECOVERY, wait_for
from tests.support.stack import stack_settings

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
            wait_for(
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

            wait_for(preprocessed, timeout_s=120, what="every upload to be preprocessed", poll_s=0.5)
        finally:
            redis.config_set("maxmemory", 0)
            client.close()
