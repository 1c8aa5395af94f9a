"""A channel closed after its broker connection was lost (a Redis failover, a restart): kombu
has dropped the channel's pool and its connection's address by then, and its requeue of held
messages — and the ack of a task that ends afterwards — raised AttributeError, which stopped
the worker ("Unrecoverable error")."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection

from shared.broker_transport import Transport

pytestmark = pytest.mark.integration


def test_held_messages_of_a_channel_closed_without_a_connection_wait_for_the_visibility_timeout(
    redis_url: str, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with Connection(redis_url, transport=Transport, transport_options={"global_keyprefix": "t:"}) as conn:
        queue = conn.SimpleQueue("cpu")
        queue.put({"upload": 1})
        queue.put({"upload": 2})
        running = queue.get(timeout=5)  # held: recorded in the unacked hash, not acked
        retried = queue.get(timeout=5)
        assert redis_conn.hlen("t:unacked") == 2
        channel = queue.channel
        # What Celery's consumer leaves behind when the connection drops before it closes the channel.
        channel._disconnect_pools()
        channel.connection.client = None
        channel.close()  # raised AttributeError: 'NoneType' object has no attribute 'hostname'
        running.ack()  # the task that was running ends: raised AttributeError (... 'client')
        retried.reject(requeue=True)  # a task requeued: raised the same
    assert redis_conn.hlen("t:unacked") == 2  # restored by kombu after the visibility timeout
    assert "2 held message(s) are not requeued now" in caplog.text
    assert "cannot acknowledge message" in caplog.text and "cannot requeue message" in caplog.text
