"""The Redis server's clock: the one clock every host of a deployment shares.

Worker hosts' clocks drift (a host without NTP, a VM resumed from a snapshot); timestamps that
one host writes and another compares with its own clock — heartbeats, an upload's last
progress — are taken from Redis instead (``TIME``, or ``redis.call('TIME')`` inside a script).
"""

from __future__ import annotations

import redis


def server_time(client: redis.Redis) -> float:
    """The Redis server's clock, in seconds since the epoch."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6
