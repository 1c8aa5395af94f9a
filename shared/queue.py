"""Celery wiring shared by workers (which register the tasks) and producers (which send
them by name and never import worker code or torch).

Delivery guarantees live here: late acks, re-queue on worker loss and on a hard time limit,
a Redis visibility timeout longer than any message can be held (checked at start-up), fast
restoration of a dead worker's unacked messages, headers that let a lost message be told
from a waiting one (`upload_headers`), and no pickle anywhere on the wire. The whole picture:
docs/robustness.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from celery import Celery
from kombu import Queue

from shared.config import Settings, WorkerSettings
from shared.errors import ConfigError
from shared.redis_client import resolve_redis_url
from shared.redis_sentinel import is_sentinel_url, kombu_url, parse_sentinel_url, sentinel_transport_options


class QueueName(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    INDEX = "index"
    SPEECH = "speech"  # Whisper transcripts: its own workers, so embeddings never wait on them


class TaskName(StrEnum):
    PREPROCESS = "omnibind.preprocess"
    EMBED = "omnibind.embed"
    INDEX = "omnibind.index"
    EMBED_QUERY = "omnibind.embed_query"
    PREPARE_QUERY = "omnibind.prepare_query"
    EMBED_PROMPTS = "omnibind.embed_prompts"
    DELETE = "omnibind.delete"
    TRANSCRIBE = "omnibind.transcribe"
    EMBED_TRANSCRIPT = "omnibind.embed_transcript"


ROUTES: dict[str, dict[str, str]] = {
    TaskName.PREPROCESS: {"queue": QueueName.CPU},
    TaskName.EMBED: {"queue": QueueName.GPU},
    TaskName.EMBED_QUERY: {"queue": QueueName.GPU},
    TaskName.EMBED_PROMPTS: {"queue": QueueName.GPU},
    TaskName.PREPARE_QUERY: {"queue": QueueName.CPU},
    TaskName.INDEX: {"queue": QueueName.INDEX},
    TaskName.DELETE: {"queue": QueueName.INDEX},  # vector-store writes stay with the index workers
    TaskName.TRANSCRIBE: {"queue": QueueName.SPEECH},
    TaskName.EMBED_TRANSCRIPT: {"queue": QueueName.GPU},  # the transcript's passages, as text
}


# Headers of every upload message: which upload it carries and when it was sent, so that a
# message lost in a crashed worker can be told from one still waiting (workers.sweeper).
UPLOAD_HEADER = "omnibind_upload"
SENT_MS_HEADER = "omnibind_sent_ms"
# Set by the fair dispatcher on an upload of a tenant without a backlog, and carried from
# stage to stage: the batchers launch such an upload at once instead of waiting for company
# for it (shared.fair_queue, "sparse tenants first").
SPARSE_HEADER = "omnibind_sparse"


UNACKED_MUTEX_EXPIRE_S = 10
GUARDED_TRANSPORT = "shared.broker_transport:Transport"
GUARDED_SENTINEL_TRANSPORT = "shared.broker_transport:SentinelTransport"


def upload_headers(upload_id: str, *, sparse: bool = False) -> dict[str, Any]:
    """The `UPLOAD_HEADER` and `SENT_MS_HEADER` (now, epoch ms) of a message about to be sent,
    and `SPARSE_HEADER` for a sparse tenant's upload."""
    headers: dict[str, Any] = {UPLOAD_HEADER: upload_id, SENT_MS_HEADER: int(time.time() * 1000)}
    if sparse:
        headers[SPARSE_HEADER] = True
    return headers


def is_sparse(headers: Mapping[str, Any] | None) -> bool:
    """Whether a received message carries `SPARSE_HEADER` (a sparse tenant's upload)."""
    return headers is not None and headers.get(SPARSE_HEADER) is True


def broker_url(settings: Settings) -> str:
    """OMNIBIND_REDIS_URL, or the embedded server's fixed loopback URL (`omnibind up`)."""
    return resolve_redis_url(settings)


def longest_hold_s(worker: WorkerSettings) -> float:
    """The longest a worker may hold a message it reserved before acking it: a retry waits
    out its countdown inside the worker (Celery ETA), then perhaps one task's time for a free
    pool process, then runs for up to the task time limit."""
    return worker.retry_backoff_max_s + 2 * worker.task_time_limit_s


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for `settings`. Raises `ConfigError` when a message could be held
    longer than the visibility timeout: Redis would then hand it to a second worker while
    the first still works on it."""
    worker = settings.worker
    if longest_hold_s(worker) >= worker.visibility_timeout_s:
        raise ConfigError(
            "OMNIBIND_WORKER__VISIBILITY_TIMEOUT_S must exceed OMNIBIND_WORKER__RETRY_BACKOFF_MAX_S + "
            f"2 x OMNIBIND_WORKER__TASK_TIME_LIMIT_S ({worker.visibility_timeout_s:g} <= "
            f"{worker.retry_backoff_max_s:g} + 2 x {worker.task_time_limit_s:g})"
        )
    transport = {
        "visibility_timeout": worker.visibility_timeout_s,
        # kombu sweeps unacked messages only every interval*throttle seconds (100 s by
        # default); sweep every few seconds so a killed worker's work comes back quickly.
        "unacked_restore_interval": max(1, int(worker.unacked_restore_interval_s)),
        "unacked_restore_throttle": 1,
        # One worker at a time restores, under a Redis lock that kombu holds for 5 minutes
        # unless released: a worker killed mid-sweep would stop all restoring that long.
        # A sweep takes milliseconds, and restoring a message twice is impossible (each
        # restore is a WATCHed transaction), so a short expiry costs nothing.
        "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE_S,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        "global_keyprefix": f"{settings.queue_prefix}:",
    }
    url = broker_url(settings)
    backend_options: dict[str, Any] = {"global_keyprefix": f"{settings.queue_prefix}:"}
    guarded: dict[str, str] = {"broker_transport": GUARDED_TRANSPORT} if url.startswith("redis://") else {}
    if is_sentinel_url(url):
        # kombu and Celery name a Sentinel group their own way: sentinel://h:p;sentinel://...
        # and the group's name as a transport option (shared.redis_sentinel).
        target = parse_sentinel_url(url)
        url = kombu_url(target)
        transport.update(sentinel_transport_options(target))
        backend_options.update(sentinel_transport_options(target))
        guarded = {"broker_transport": GUARDED_SENTINEL_TRANSPORT}
    return {
        "broker_url": url,
        # Envelopes are checked before kombu parses them, and undecodable messages are
        # dead-lettered (shared.broker_transport, workers.consumer). A rediss:// URL keeps
        # kombu's own transport, which turns TLS on from the scheme's name.
        **guarded,
        "worker_consumer": "workers.consumer:Consumer",
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "result_backend": url,
        "result_backend_transport_options": backend_options,
        "result_expires": 300,
        "task_ignore_result": True,  # only embed_query and embed_prompts return a result
        "task_serializer": "msgpack",
        "result_serializer": "msgpack",
        "accept_content": ["msgpack", "json"],
        "result_accept_content": ["msgpack", "json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Our tasks settle every outcome themselves (workers.stage), so a failure that still
        # escapes is acked; a task killed at its hard time limit is requeued instead: it
        # then counts as a crash and ends dead-lettered as poison, never silently dropped.
        "task_acks_on_failure": True,
        "task_acks_on_timeout": False,
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
