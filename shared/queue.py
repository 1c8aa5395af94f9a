"""Celery wiring shared by workers (which register the tasks) and producers (which send
them by name and never import worker code or torch).

Delivery guarantees live here: late acks, re-queue on worker loss, a Redis visibility
timeout longer than the slowest task, fast restoration of a dead worker's unacked messages,
and no pickle anywhere on the wire.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from celery import Celery
from kombu import Queue

from shared.config import Settings
from shared.errors import ConfigError
from shared.redis_client import resolve_redis_url


class QueueName(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    INDEX = "index"


class TaskName(StrEnum):
    PREPROCESS = "omnibind.preprocess"
    EMBED = "omnibind.embed"
    INDEX = "omnibind.index"
    EMBED_QUERY = "omnibind.embed_query"
    PREPARE_QUERY = "omnibind.prepare_query"
    EMBED_PROMPTS = "omnibind.embed_prompts"
    DELETE = "omnibind.delete"


ROUTES: dict[str, dict[str, str]] = {
    TaskName.PREPROCESS: {"queue": QueueName.CPU},
    TaskName.EMBED: {"queue": QueueName.GPU},
    TaskName.EMBED_QUERY: {"queue": QueueName.GPU},
    TaskName.EMBED_PROMPTS: {"queue": QueueName.GPU},
    TaskName.PREPARE_QUERY: {"queue": QueueName.CPU},
    TaskName.INDEX: {"queue": QueueName.INDEX},
    TaskName.DELETE: {"queue": QueueName.INDEX},  # vector-store writes stay with the index workers
}


def broker_url(settings: Settings) -> str:
    """OMNIBIND_REDIS_URL, or the embedded server's fixed loopback URL (`omnibind up`)."""
    return resolve_redis_url(settings)


def celery_config(settings: Settings) -> dict[str, Any]:
    worker = settings.worker
    if worker.task_time_limit_s >= worker.visibility_timeout_s:
        # A task still running when its message becomes visible again would run twice at once.
        raise ConfigError(
            "OMNIBIND_WORKER__TASK_TIME_LIMIT_S must be below OMNIBIND_WORKER__VISIBILITY_TIMEOUT_S "
            f"({worker.task_time_limit_s} >= {worker.visibility_timeout_s})"
        )
    transport = {
        "visibility_timeout": worker.visibility_timeout_s,
        # kombu sweeps unacked messages only every interval*throttle seconds (100 s by
        # default); sweep every few seconds so a killed worker's work comes back quickly.
        "unacked_restore_interval": max(1, int(worker.unacked_restore_interval_s)),
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        "global_keyprefix": f"{settings.queue_prefix}:",
    }
    return {
        "broker_url": broker_url(settings),
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "result_backend": broker_url(settings),
        "result_backend_transport_options": {"global_keyprefix": f"{settings.queue_prefix}:"},
        "result_expires": 300,
        "task_ignore_result": True,  # only embed_query and embed_prompts return a result
        "task_serializer": "msgpack",
        "result_serializer": "msgpack",
        "accept_content": ["msgpack", "json"],
        "result_accept_content": ["msgpack", "json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_routes": ROUTES,
        "task_queues": [Queue(q.value, routing_key=q.value) for q in QueueName],
        "task_default_queue": QueueName.CPU.value,
        "task_time_limit": worker.task_time_limit_s,
        "task_soft_time_limit": worker.task_time_limit_s * 0.9,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }


def make_celery(settings: Settings, name: str = "omnibind") -> Celery:
    """A Celery app configured for omnibind (tasks are registered by `workers.app`)."""
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app
