from __future__ import annotations

import time

import redis

from shared.heartbeat import TTL_S, Heartbeat, live_workers


def test_a_heartbeat_announces_the_worker_with_its_details_until_it_stops(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    beat = Heartbeat(client, "hb", "gpu", lambda: {"gpu": {"batches": 3}})
    beat.start()
    try:
        (worker,) = live_workers(client, "hb", "gpu")
        assert worker["kind"] == "gpu" and worker["gpu"] == {"batches": 3}
        assert live_workers(client, "hb", "cpu") == []
        assert 0 < client.ttl(next(iter(client.scan_iter("hb:workers:*")))) <= TTL_S
    finally:
        beat.stop()  # the shared server outlives the test: no beat may go on into the next
    assert live_workers(client, "hb") == []


def test_a_worker_whose_heartbeat_expired_is_not_listed_and_is_pruned(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    beat = Heartbeat(client, "hb", "cpu")
    beat.start()
    try:
        key = next(iter(client.scan_iter("hb:workers:cpu:*")))
        client.delete(key)  # what expiry does to a killed worker's key
        assert live_workers(client, "hb") == []
        client.zadd("hb:workers", {key: 0})  # a beat older than the TTL
        live_workers(client, "hb")
        assert client.zcard("hb:workers") == 0
    finally:
        beat.stop()


def test_beats_are_stamped_and_judged_by_redis_clock_not_the_hosts(redis_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    real_time = time.time
    beat = Heartbeat(client, "hb", "cpu")
    monkeypatch.setattr(time, "time", lambda: real_time() - 30)  # this worker's host is 30 s behind
    beat._beat()
    monkeypatch.undo()
    # A reader with a right clock used to prune that beat at once as older than the TTL.
    (worker,) = live_workers(client, "hb")
    assert abs(float(worker["beat_at"]) - real_time()) < 5  # type: ignore[arg-type]
    beat.stop()
