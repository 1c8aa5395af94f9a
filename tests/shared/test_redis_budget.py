"""The Redis budget (docs/redis.md "Budget"), pinned against real redis-server processes:
the embedded server's AOF is rewritten before it grows far past the data it holds, the
default stream caps fit the stream budget, and a server whose AOF disk runs full refuses
writes as `RedisUnavailable` (transient) and takes them again by itself once space returns."""

from __future__ import annotations

import pytest
import redis

from producers.embedded_redis import AOF_REWRITE_MIN_BYTES, AOF_REWRITE_PERCENTAGE
from shared.config import ModerationSettings, RedisSettings
from shared.errors import CorruptMedia
from shared.events import Modality, ObjectRef, Stage, UploadEvent, UploadStatus
from shared.moderation.decision import Evidence, decide
from shared.moderation.log import DecisionLog
from shared.moderation.policy import load_policy
from shared.redis_client import RedisUnavailable, redis_client
from shared.status import StatusStore
from shared.streams import DeadLetterStream
from tests.support.full_disk import FullDiskRedis
from tests.support.redis_server import RedisServers
from tests.support.waiting import wait_until

# docs/redis.md: the three streams at their default caps fit in this much Redis memory.
STREAM_BUDGET_BYTES = 256 * 2**20
# A preprocessed image crosses Redis as a 3x224x224 uint8 array: ~150 KB, base64 in kombu's
# envelope, written to the AOF once when queued and once when reserved.
ARRAY_MESSAGE = b"\x7f" * (4 * 150_528 // 3)


def _client(url: str) -> redis.Redis:
    return redis_client(url, socket_timeout_s=10.0)


def _aof(client: redis.Redis) -> dict[str, int]:
    info = client.info("persistence")
    return {k: int(info[k]) for k in ("aof_current_size", "aof_base_size", "aof_rewrite_in_progress")}


def test_embedded_aof_is_rewritten_once_churn_passes_its_floor(redis_servers: RedisServers) -> None:
    client = _client(redis_servers.start().url)
    config = client.config_get("auto-aof-rewrite-*")
    assert int(config["auto-aof-rewrite-min-size"]) == AOF_REWRITE_MIN_BYTES == 16 * 2**20
    assert int(config["auto-aof-rewrite-percentage"]) == AOF_REWRITE_PERCENTAGE == 100
    client.set("kept", "v")
    # Arrays pass through a queue and are gone from memory, but every pass is in the AOF:
    # three times the floor of churn, with almost nothing left in memory. Each time the AOF
    # passes the floor, a rewrite must bring it back to the data (the churn pauses meanwhile:
    # what arrives during a rewrite is appended to the new file).
    rewrites = 0
    for _ in range(3 * AOF_REWRITE_MIN_BYTES // (8 * len(ARRAY_MESSAGE))):
        for _ in range(8):
            client.lpush("queue", ARRAY_MESSAGE)
            client.rpop("queue")
        if _aof(client)["aof_current_size"] > AOF_REWRITE_MIN_BYTES:
            rewrites += 1
            wait_until(
                lambda: (a := _aof(client))["aof_current_size"] < 2**20 and not a["aof_rewrite_in_progress"],
                timeout_s=60,
                what="an automatic AOF rewrite",
                poll_s=0.05,
            )
    assert rewrites >= 2
    assert client.get("kept") == "v"


def _decision_entry_bytes(client: redis.Redis, n: int) -> float:
    policy = load_policy()
    log = DecisionLog(client, "budget")
    scores = {name: 0.01 * (i + 1) for i, name in enumerate(policy.categories)}
    for i in range(n):
        log.append(f"upload-{i:06d}", decide(policy, Evidence(Modality.IMAGE, zero_shot=scores)))
    return int(client.memory_usage(log.key, samples=0)) / n


def _result_and_dead_entry_bytes(client: redis.Redis, n: int) -> tuple[float, float]:
    store, dead = StatusStore(client, "budget"), DeadLetterStream(client, "budget")
    ref = ObjectRef(
        bucket="uploads",
        key="2026/12/05/camera-roll/IMG_0001.jpg",
        size=201_357,
        etag="e" * 32,
        content_type="image/jpeg",
    )
    for i in range(n):
        event = UploadEvent(id=f"upload-{i:06d}", object=ref, source="api", tenant="tenant-a")
        store.create(event)
        if i % 2:
            store.advance(
                event.id, UploadStatus.INDEXED, modality=Modality.IMAGE, object_ref=ref, flagged=False, categories=[]
            )
        else:
            error = CorruptMedia("cannot identify image file: truncated JPEG data at byte 48213 of 201357")
            store.fail(event.id, Stage.PREPROCESS, error, dead_letter=event.model_dump_json(), attempts=1)
    results = int(client.memory_usage("budget:results", samples=0)) / n
    return results, int(client.memory_usage(dead.key, samples=0)) / (n // 2)


def test_default_stream_caps_fit_the_stream_budget(redis_conn: redis.Redis) -> None:
    decision_bytes = _decision_entry_bytes(redis_conn, 2000)
    result_bytes, dead_bytes = _result_and_dead_entry_bytes(redis_conn, 2000)
    redis_defaults, moderation_defaults = RedisSettings(), ModerationSettings()

    at_caps = {
        "results": redis_defaults.results_maxlen * result_bytes,
        "dead": redis_defaults.dead_maxlen * dead_bytes,
        "decisions": moderation_defaults.decisions_maxlen * decision_bytes,
    }

    assert sum(at_caps.values()) <= STREAM_BUDGET_BYTES, {k: f"{v / 2**20:.0f} MiB" for k, v in at_caps.items()}


def _write_until_refused(client: redis.Redis) -> RedisUnavailable:
    store = StatusStore(client, "disk")
    for i in range(1000):
        try:
            store.create(UploadEvent(id=f"probe-{i}", text="x" * 200))
        except RedisUnavailable as exc:
            return exc
    raise AssertionError("the server never refused a write with its AOF disk full")


def test_full_aof_disk_refuses_writes_as_unavailable_and_recovers_without_a_restart(
    full_disk_redis: FullDiskRedis,
) -> None:
    client = _client(full_disk_redis.url)
    store, dead = StatusStore(client, "disk"), DeadLetterStream(client, "disk")
    store.create(UploadEvent(id="before", text="written before the disk ran full"))
    pid = full_disk_redis.pid

    full_disk_redis.fill_disk()
    refusal = _write_until_refused(client)

    assert "MISCONF" in str(refusal) and full_disk_redis.aof_write_failing()
    with pytest.raises(RedisUnavailable):
        store.advance("before", UploadStatus.EMBEDDED)
    with pytest.raises(RedisUnavailable):
        dead.dead_letter("{}", stage="embed", error_class="X", reason="x", message="m", attempts=1)
    record = store.get("before")
    assert record is not None and record.status is UploadStatus.QUEUED, "reads still answer"

    full_disk_redis.free_disk()
    wait_until(lambda: not full_disk_redis.aof_write_failing(), timeout_s=30, what="the AOF write to succeed again")

    assert store.advance("before", UploadStatus.EMBEDDED)
    assert full_disk_redis.pid == pid, "no restart was needed"
    full_disk_redis.stop()
    full_disk_redis.start()  # the AOF cut short by the full disk loads, with every write it confirmed
    reloaded = StatusStore((_client(full_disk_redis.url)), "disk").get("before")
    assert reloaded is not None and reloaded.status is UploadStatus.EMBEDDED
