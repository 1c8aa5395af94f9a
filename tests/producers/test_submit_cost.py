"""What one submission costs Redis (real redis-server): every avoidable round trip is paid
once per upload, so the count is pinned here. The count is read from the server-wide INFO
commandstats, so the test has a server of its own (`own_redis_url`), not the shared one."""

from __future__ import annotations

from collections.abc import Callable

import redis
from pydantic import SecretStr

from producers.client import Client
from shared.config import Settings


def command_calls(conn: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in conn.info("commandstats").items()}


def calls_during(conn: redis.Redis, action: Callable[[], object]) -> dict[str, int]:
    before = command_calls(conn)
    action()
    after = command_calls(conn)
    return {name: count - before.get(name, 0) for name, count in after.items() if count != before.get(name, 0)}


def test_a_submission_pushes_one_message_and_subscribes_to_no_result_channel(
    make_settings: Callable[..., Settings], own_redis_url: str, own_redis_conn: redis.Redis
) -> None:
    with Client(make_settings(redis_url=SecretStr(own_redis_url))) as client:
        client.submit_text("warm-up: connections and scripts are loaded once")
        calls = calls_during(own_redis_conn, lambda: [client.submit_text(f"caption {i}") for i in range(10)])
    assert calls.get("lpush") == 10
    # Celery's Redis result backend SUBSCRIBEs to a result channel per message sent
    # unless the message says its result is ignored; nobody reads these results.
    assert "subscribe" not in calls
    assert "unsubscribe" not in calls
