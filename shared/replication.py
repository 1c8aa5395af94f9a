"""Waiting until writes are on the replicas, so that a failover cannot take back what a
producer already confirmed.

Redis replicates asynchronously: a primary answers a write before any replica has it, and a
failover promotes a replica, losing whatever the dead primary had not sent yet (docs/redis.md,
"Failover"). ``WAIT n timeout`` blocks until the *calling connection's* writes reached `n`
replicas, and replication is one ordered stream, so a write made here on the same connection
just before ``WAIT`` stands for every write any connection finished before it: once the
marker is on a replica, so is the upload's status record and its message.
"""

from __future__ import annotations

import redis

from shared.redis_client import RedisUnavailable, translate_redis_errors

MARKER_TTL_MS = 60_000


class NotReplicated(RedisUnavailable):
    """Fewer replicas than asked acknowledged a write in time; `run_started` says whether the
    submission had already recorded a new run (which stands on the primary)."""

    run_started = False


def marker_key(prefix: str) -> str:
    return f"{prefix}:replication:marker"


def wait_for_replicas(client: redis.Redis, prefix: str, replicas: int, timeout_ms: int) -> int:
    """Block until every write finished before this call is on `replicas` replicas, or
    `timeout_ms` passed; returns how many replicas have them. Raises `RedisUnavailable` when
    fewer than `replicas` acknowledged in time (`NotReplicated`: the writes stand on the
    primary, but a failover now could lose them: the caller must not confirm them). `replicas` <= 0 returns
    at once, without a command."""
    if replicas <= 0:
        return 0
    # One connection (a pipeline): the WAIT covers the marker, and so every earlier write.
    with translate_redis_errors("waiting for replicas"), client.pipeline(transaction=False) as pipe:
        pipe.set(marker_key(prefix), "1", px=MARKER_TTL_MS)
        pipe.wait(replicas, timeout_ms)
        _, acked = pipe.execute()
    if int(acked) < replicas:
        raise NotReplicated(
            f"only {acked} of {replicas} Redis replicas acknowledged the write within {timeout_ms} ms "
            "(OMNIBIND_REDIS__WAIT_REPLICAS); it is not confirmed"
        )
    return int(acked)
