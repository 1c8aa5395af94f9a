"""What a Redis refusal means and what an operator can do about it, for log lines.

A refusal (`shared.redis_client.is_refusal`) is Redis declining a command for now: the worker
or producer that meets one backs off and asks again, but only a person can make most of them
end (free disk, raise ``maxmemory``, point at the primary). Each log line about a refusal
therefore names its code and the fix, taken from here. Pure: no I/O.
"""

from __future__ import annotations

import re

import redis

_CODE = re.compile(
    r"(?:^|[\s:-])(OOM|MISCONF|READONLY|NOREPLICAS|MASTERDOWN|LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|UNBLOCKED)\b"
)

ADVICE: dict[str, str] = {
    "OOM": (
        "Redis is full (maxmemory under noeviction): raise its maxmemory (the embedded server's: "
        "OMNIBIND_REDIS__EMBEDDED_MAXMEMORY_MB) or let the queues drain; docs/redis.md#budget sizes it"
    ),
    "MISCONF": (
        "Redis cannot write its AOF or snapshot (its disk is full or unwritable): free space on its data "
        "volume; it takes writes again by itself once a write succeeds"
    ),
    "READONLY": (
        "this Redis is a read-only replica: point OMNIBIND_REDIS_URL at the primary (after a failover, the new one)"
    ),
    "NOREPLICAS": (
        "fewer replicas are connected than its min-replicas-to-write asks for: bring the replicas back "
        "or lower min-replicas-to-write"
    ),
    "MASTERDOWN": "this replica lost its primary: bring the primary back or point OMNIBIND_REDIS_URL at it",
    "LOADING": "Redis is loading its data after a restart: nothing to do, it answers once loaded",
    "BUSY": "a Lua script has run past lua-time-limit: wait, or end it with SCRIPT KILL",
    "TRYAGAIN": "the cluster is moving keys: nothing to do if it passes",
    "CLUSTERDOWN": "the cluster is down: bring its nodes back",
    "UNBLOCKED": (
        "the server changed role while the worker waited on it (primary -> replica?): check for a failover "
        "and point OMNIBIND_REDIS_URL at the primary"
    ),
}
_UNKNOWN = "check the Redis server's log"


def refusal_code(exc: redis.ResponseError) -> str | None:
    """The error code of refusal `exc` (``"MISCONF"``...), None when it names none.

    redis-py strips the code of the errors it has a class for (``ReadOnlyError``,
    ``OutOfMemoryError``), so those are told by their class."""
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "READONLY"
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "OOM"
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return "LOADING"
    match = _CODE.search(str(exc))
    return match.group(1) if match else None


def operator_advice(exc: redis.ResponseError) -> str:
    """One sentence: what the refusal `exc` means and what an operator can do."""
    return ADVICE.get(refusal_code(exc) or "", _UNKNOWN)
