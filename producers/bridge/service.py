"""The `omnibind bridge` process: its consumers built from settings, run until stopped."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import redis

from producers.bridge.enqueue import Ingestor
from producers.bridge.list_consumer import MinioEventsConsumer
from producers.bridge.minio_events import MinioOptions
from producers.bridge.runner import Consumer, retry_delay_s, run_consumers
from producers.bridge.stream_consumer import IngestStreamConsumer, StreamOptions
from producers.bridge.stream_group import StreamGroup
from producers.bridge.subscription import UnknownTarget, subscribe_bucket
from producers.bridge.tenants import SourceTenancy
from producers.client import Client
from shared.config import Settings
from shared.errors import ConfigError, TransientError
from shared.heartbeat import Heartbeat
from shared.objects.factory import open_object_store
from shared.redis_client import redis_client, resolve_redis_url
from shared.redis_keys import RedisKeys
from shared.streams import DeadLetterStream
from shared.tenancy import object_tenants

log = logging.getLogger(__name__)

HEARTBEAT_KIND = "bridge"
SUBSCRIBE_ATTEMPTS = 5
TARGET_POLL_S = 0.5


def consumer_name(configured: str | None) -> str:
    """The configured consumer name, else this host's name (stable across container restarts
    when compose sets ``hostname``)."""
    return configured or socket.gethostname()


def raw_redis(settings: Settings) -> redis.Redis:
    """A client that returns bytes: entries are decoded one by one, so a producer's non-UTF-8
    bytes fail that entry alone instead of every read of the batch."""
    opts = settings.redis
    return redis_client(
        resolve_redis_url(settings),
        connect_timeout_s=opts.connect_timeout_s,
        socket_timeout_s=opts.socket_timeout_s,
        health_check_interval_s=opts.health_check_interval_s,
        retries=opts.retries,
        decode_responses=False,
    )


def build_consumers(
    settings: Settings, client: Client, raw: redis.Redis, *, stream: bool, minio: bool
) -> list[Consumer]:
    """The consumers `settings` ask for (`stream` / `minio` switch them on)."""
    options = settings.bridge
    keys = RedisKeys(settings.queue_prefix)
    name = consumer_name(options.consumer)
    ingestor = Ingestor(client)
    dead = DeadLetterStream.from_settings(client.redis, settings)
    consumers: list[Consumer] = []
    owners = object_tenants(settings)
    if stream:
        timing = StreamOptions(
            batch_size=options.batch_size,
            block_ms=int(options.block_s * 1000),
            reclaim_idle_ms=int(options.reclaim_idle_s * 1000),
        )
        streams = [(keys.ingest, options.stream_tenant)]
        streams += [(keys.tenant_ingest(tenant), tenant) for tenant in options.tenant_streams]
        for key, tenant in streams:
            group = StreamGroup(raw, key, options.group, name)
            tenancy = SourceTenancy(tenant, owners, f"stream {key}")
            consumers.append(IngestStreamConsumer(group, ingestor, dead, timing, tenancy))
    if minio:
        mapping = MinioOptions(
            source=options.minio_source, ignore_prefixes=tuple(options.minio_ignore_prefixes), tenants=owners
        )
        events_key = options.minio_events_key or keys.minio_events
        consumers.append(
            MinioEventsConsumer(
                raw,
                events_key,
                name,
                ingestor,
                dead,
                mapping,
                delete_records=options.minio_delete_records,
                block_s=options.block_s,
                # The bucket that notifies: a delete marker's removal is told from its
                # creation by what the key shows now (a local store knows no MinIO bucket).
                objects=client.objects if settings.objects.backend == "minio" else None,
            )
        )
    return consumers


def subscribe_configured_bucket(settings: Settings, stop: threading.Event) -> None:
    """With ``OMNIBIND_BRIDGE__MINIO_NOTIFY_ARN`` set, make the uploads bucket (created if
    missing) notify that ARN. MinIO still starting is retried a few times, and a MinIO that
    does not know the ARN is asked again for ``OMNIBIND_BRIDGE__MINIO_TARGET_WAIT_S``: it
    answers requests before it has loaded its notification targets.

    Raises `ConfigError` (MinIO refuses; `UnknownTarget` once the wait is over) or the last
    `TransientError`.
    """
    arn = settings.bridge.minio_notify_arn
    if not arn:
        return
    if settings.objects.backend != "minio":
        raise ConfigError("OMNIBIND_BRIDGE__MINIO_NOTIFY_ARN needs OMNIBIND_OBJECTS__BACKEND=minio")
    bucket = settings.objects.bucket
    target_deadline = time.monotonic() + settings.bridge.minio_target_wait_s
    attempt = 0
    while True:
        try:
            _subscribe_once(settings, bucket, arn)
            return
        except UnknownTarget as exc:
            if time.monotonic() >= target_deadline or stop.wait(TARGET_POLL_S):
                raise
            log.info("bucket %s: MinIO does not know %s yet (%s); asking again", bucket, arn, exc.reason)
        except TransientError as exc:
            attempt += 1
            if attempt == SUBSCRIBE_ATTEMPTS or stop.wait(retry_delay_s(attempt)):
                raise
            log.warning("subscribing bucket %s: %s; retrying", bucket, exc)


def _subscribe_once(settings: Settings, bucket: str, arn: str) -> None:
    store = open_object_store(settings)
    try:
        store.ensure_bucket(bucket)
    finally:
        store.close()
    subscribe_bucket(settings.objects, bucket, arn)


@contextlib.contextmanager
def heartbeat(client: Client, kind: str) -> Iterator[None]:
    beat = Heartbeat(client.redis, client.settings.queue_prefix, kind)
    beat.start()
    try:
        yield
    finally:
        beat.stop()


def run_bridge(settings: Settings, stopping: Callable[[], bool], *, stream: bool, minio: bool) -> None:
    """Run the bridge until `stopping()` returns True. Raises `ConfigError` for a bad
    configuration or when nothing is enabled."""
    if not (stream or minio):
        raise ConfigError("nothing to bridge: both the ingest stream and MinIO notifications are switched off")
    stop = threading.Event()
    with Client(settings, source="bridge") as client:
        raw = raw_redis(settings)
        try:
            if minio:
                subscribe_configured_bucket(settings, stop)
            consumers = build_consumers(settings, client, raw, stream=stream, minio=minio)
            log.info(
                "bridge consuming %s as %s",
                ", ".join(c.name for c in consumers),
                consumer_name(settings.bridge.consumer),
            )
            with heartbeat(client, HEARTBEAT_KIND):
                run_consumers(consumers, stopping, stop)
        finally:
            raw.close()
