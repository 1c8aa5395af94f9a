"""The one backpressure rule, as producers see it (real redis-server, local object store)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from producers.client import Client
from producers.ingest import Submitted, submit_files
from shared.backpressure import check_backpressure, gpu_queue_full, queue_length
from shared.config import Settings
from shared.errors import Busy
from shared.events import UploadEvent
from shared.queue import QueueName


def connected(make_settings: Callable[..., Settings], redis_url: str, **overrides: object) -> Settings:
    return make_settings(redis_url=SecretStr(redis_url), **overrides)


def test_client_is_refused_with_busy_once_the_cpu_queue_is_over_the_limit(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    settings = connected(make_settings, redis_url, backpressure={"max_cpu_queue": 2})
    with Client(settings) as client:
        for i in range(3):
            client.submit_text(f"text {i}")
        assert queue_length(client.redis, settings.queue_prefix, QueueName.CPU) == 3
        with pytest.raises(Busy) as refused:
            client.submit(b"hello world", filename="hello.txt", upload_id="refused-upload")
        with pytest.raises(Busy):
            client.enqueue(UploadEvent(text="more"))
    assert refused.value.reason == "busy"
    assert "3 uploads wait in the cpu queue (limit 2)" in refused.value.message
    # Refused before anything was stored or recorded.
    assert not (settings.objects_root / settings.objects.bucket / "refused-upload").exists()
    assert Client(settings).status("refused-upload") is None


def test_a_limit_of_zero_never_refuses(
    make_settings: Callable[..., Settings], redis_conn: redis.Redis, redis_url: str
) -> None:
    settings = connected(make_settings, redis_url, backpressure={"max_cpu_queue": 0})
    redis_conn.rpush("omnibind:cpu", *[b"x"] * 50)
    check_backpressure(redis_conn, settings)


def test_the_check_reads_kombus_queue_list(
    make_settings: Callable[..., Settings], redis_conn: redis.Redis, redis_url: str
) -> None:
    settings = connected(make_settings, redis_url, backpressure={"max_cpu_queue": 5}, queue_prefix="tenant-a")
    redis_conn.rpush("tenant-a:cpu", *[b"x"] * 5)
    redis_conn.rpush("tenant-a:gpu", *[b"x"] * 50)  # other queues do not count
    check_backpressure(redis_conn, settings)
    redis_conn.rpush("tenant-a:cpu", b"x")
    with pytest.raises(Busy):
        check_backpressure(redis_conn, settings)


def test_ingest_waits_out_backpressure_instead_of_dropping_files(
    make_settings: Callable[..., Settings], redis_conn: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = connected(make_settings, redis_url, backpressure={"max_cpu_queue": 1, "retry_after_s": 1})
    files = [tmp_path / f"note-{i}.txt" for i in range(2)]
    for path in files:
        path.write_text(f"note {path.name}")
    redis_conn.rpush("omnibind:cpu", b"old-1", b"old-2")  # over the limit: the pipeline is busy
    submitted: list[Submitted] = []
    with Client(settings) as client:
        thread = threading.Thread(target=lambda: submitted.extend(submit_files(client, files, progress=False)))
        thread.start()
        thread.join(timeout=2.5)
        assert thread.is_alive(), "ingest must wait while the pipeline is busy"
        redis_conn.delete("omnibind:cpu")  # the workers caught up
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert [s.upload_id is not None for s in submitted] == [True, True]


def test_the_gpu_queue_is_full_past_its_limit_and_never_at_zero(
    make_settings: Callable[..., Settings], redis_conn: redis.Redis, redis_url: str
) -> None:
    settings = connected(make_settings, redis_url, backpressure={"max_gpu_queue": 2})
    for n in range(3):
        assert gpu_queue_full(redis_conn, settings) is None, f"{n} waiting"
        redis_conn.lpush("omnibind:gpu", f"array-{n}")
    assert gpu_queue_full(redis_conn, settings) == "3 arrays wait in the gpu queue (limit 2)"
    unlimited = connected(make_settings, redis_url, backpressure={"max_gpu_queue": 0})
    assert gpu_queue_full(redis_conn, unlimited) is None
