"""Backpressure: when producers must stop handing work to the pipeline for a while.

One rule, used by every producer (the Python client, the HTTP API, the ingest bridge):
while more messages wait in the cpu queue — the entry of the pipeline, kombu's Redis list
``{prefix}:cpu`` — than ``OMNIBIND_BACKPRESSURE__MAX_CPU_QUEUE``, new uploads are refused
with `Busy` (HTTP 429 with ``Retry-After``). Refusing at the door keeps Redis memory and
upload latency bounded when the workers cannot keep up; work already accepted is never
dropped.

Inside the pipeline, the cpu stage turns each upload into a model-ready array that rides
the gpu queue *inside* its message (~0.2 MB for an image or audio clip, against ~2 KB for an
upload event), so a GPU slower than the CPUs would pile arrays up in Redis without bound
(the cpu queue drains into the gpu queue). The same rule applies there: while more than
``OMNIBIND_BACKPRESSURE__MAX_GPU_QUEUE`` messages wait in the gpu queue, cpu workers hold off
preprocessing (`gpu_queue_full`, `workers.tasks.cpu`); the uploads then wait as small events
in the cpu queue, whose length producers check as above.

With fair queues (``OMNIBIND_FAIRNESS__ENABLED``, `shared.fair_queue`) the backlog is per
tenant: the cpu queue stays short (the dispatcher's windows), and the uploads waiting in the
submitting tenant's own list count as waiting in it. So a tenant's flood past the limit is
refused at its door while other tenants' uploads are still taken; Redis holds at most the
limit of waiting events per tenant.

Each check costs one LLEN (a single round trip, O(1)), two with fair queues.
"""

from __future__ import annotations

from typing import Any

import redis

from shared.config import Settings
from shared.errors import Busy
from shared.fair_queue import NO_TENANT
from shared.queue import QueueName
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys


class Unknown:
    """The tenant of a check that counts no fair queue (`check_backpressure`)."""


UNKNOWN = Unknown()


def queue_length(client: redis.Redis, prefix: str, queue: QueueName | str) -> int:
    """Messages waiting in Celery queue `queue` (not counting those reserved by workers).

    Raises `RedisUnavailable` when Redis cannot be reached.
    """
    with translate_redis_errors(f"reading the length of queue {queue}"):
        length: Any = client.llen(RedisKeys(prefix).queue(str(queue)))
    return int(length)


def check_backpressure(client: redis.Redis, settings: Settings, *, tenant: str | Unknown | None = UNKNOWN) -> None:
    """Return if the pipeline takes new uploads now; raise `Busy` if it does not.

    Raises `Busy` (transient, reason ``busy``) while the cpu queue holds more than
    ``settings.backpressure.max_cpu_queue`` messages (never when that is 0), and
    `RedisUnavailable` when Redis cannot be reached. Callers tell their own callers to come
    back after ``settings.backpressure.retry_after_s``. `tenant`: whose upload it is (None: an
    upload without a tenant); with fair queues its waiting uploads count too (left out:
    only the cpu queue is counted, as for a search, or an upload whose tenant is not known
    yet and is checked again once it is).
    """
    limit = settings.backpressure.max_cpu_queue
    if limit <= 0:
        return
    waiting = queue_length(client, settings.queue_prefix, QueueName.CPU)
    if settings.fairness.enabled and not isinstance(tenant, Unknown):  # its own backlog
        waiting += waiting_for_turn(client, settings.queue_prefix, tenant)
    if waiting > limit:
        raise Busy(
            f"the pipeline is busy: {waiting} uploads wait in the cpu queue (limit {limit}); "
            f"retry in {settings.backpressure.retry_after_s} s"
        )


def waiting_for_turn(client: redis.Redis, prefix: str, tenant: str | None) -> int:
    """Uploads of `tenant` waiting in its fair queue. Raises `RedisUnavailable`."""
    with translate_redis_errors(f"counting the uploads of {tenant} waiting for their turn"):
        length: Any = client.llen(RedisKeys(prefix).fair_queue(tenant if tenant is not None else NO_TENANT))
    return int(length)


def gpu_queue_full(client: redis.Redis, settings: Settings) -> str | None:
    """Why the cpu stage must not add an array to the gpu queue now, or None when it may:
    the gpu queue holds more than ``settings.backpressure.max_gpu_queue`` messages (never when
    that is 0). Raises `RedisUnavailable` when Redis cannot be reached."""
    limit = settings.backpressure.max_gpu_queue
    if limit <= 0:
        return None
    waiting = queue_length(client, settings.queue_prefix, QueueName.GPU)
    return f"{waiting} arrays wait in the gpu queue (limit {limit})" if waiting > limit else None
