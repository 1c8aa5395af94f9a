"""The redis-server behind `redis_url` is shared by the tests of a process and reset before each
(tests/support/redis_server.py): what one test leaves on it (keys, a changed CONFIG value, a
loaded script, open connections, a subscriber) does not reach the next, and a server a test
shut down is replaced."""

from __future__ import annotations

import contextlib

import redis

from producers.embedded_redis import DEFAULT_MAXMEMORY_MB
from shared.redis_client import redis_client
from tests.support.redis_server import SharedRedis


def test_what_a_test_leaves_on_the_shared_server_does_not_reach_the_next_test(
    redis_url: str, redis_conn: redis.Redis, shared_redis: SharedRedis
) -> None:
    assert redis_url == shared_redis.server.url, "redis_url hands out the shared server"
    replaced = shared_redis.replaced
    # What a test may leave behind.
    left = redis_client(redis_url)
    left.set("left-over", "1")
    left.rpush("omnibind:cpu", "message")
    sha = left.script_load("return 1")
    left.config_set("notify-keyspace-events", "KEA")
    left.config_set("min-replicas-to-write", 1)
    left.config_set("maxmemory", 0)
    left_id = left.client_id()
    subscriber = left.pubsub()
    subscriber.subscribe("news")
    assert subscriber.get_message(timeout=5) is not None  # the subscription is confirmed
    assert len(redis_conn.client_list()) >= 3

    next_url = shared_redis.fresh_url()  # what the next test's `redis_url` does

    assert next_url == redis_url and shared_redis.replaced == replaced, "reset in place, not replaced"
    with redis_client(next_url) as fresh:
        assert fresh.dbsize() == 0
        assert fresh.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}
        assert fresh.config_get("min-replicas-to-write") == {"min-replicas-to-write": "0"}
        assert fresh.config_get("maxmemory") == {"maxmemory": str(DEFAULT_MAXMEMORY_MB * 2**20)}
        assert fresh.script_exists(sha) == [False]
        clients = fresh.client_list()
        assert left_id not in {int(c["id"]) for c in clients}, "the left connection was closed"
        assert fresh.client_list(_type="pubsub") == [], "and the subscriber"
        assert len(clients) == 2, "only the reset's own connection and this one"
        assert fresh.set("k", "v"), "writes are taken again (no replica is required)"
    subscriber.close()
    left.close()


def test_a_shared_server_that_a_test_shut_down_is_replaced(redis_conn: redis.Redis, shared_redis: SharedRedis) -> None:
    replaced = shared_redis.replaced
    with contextlib.suppress(redis.ConnectionError):
        redis_conn.shutdown(nosave=True)

    url = shared_redis.fresh_url()

    assert shared_redis.replaced == replaced + 1
    with redis_client(url) as fresh:
        assert fresh.ping() and fresh.dbsize() == 0
