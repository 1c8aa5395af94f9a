"""The production shape, on one machine: what docker-compose.yml runs, as real processes.

redis-server, MinIO (bucket notifications to that Redis in ``access`` format), Weaviate
(API key, no vectorizer), cpu/gpu/index Celery workers with the tiny model, `omnibind
bridge` as a subprocess (it subscribes the bucket itself, OMNIBIND_BRIDGE__MINIO_NOTIFY_ARN)
and the HTTP API. Used by tests/integration/test_production_shape.py and bench/chaos.py.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minio import Minio
from minio.versioningconfig import ENABLED, VersioningConfig
from pydantic import SecretStr

from producers.client import Client
from producers.embedded_redis import EmbeddedRedis
from producers.processes import stop_process
from producers.stack import Stack
from shared.config import Settings
from tests.support.api_server import ApiServer, start_api_server
from tests.support.chaos import queue_lengths, unacked_by_queue
from tests.support.minio_server import MinioServer
from tests.support.stack import stack_settings
from tests.support.waiting import wait_until
from tests.support.weaviate_server import WeaviateServer

REPO = Path(__file__).resolve().parents[2]
API_KEY = "production-shape-key"
EVENTS_KEY = "omnibind:minio:events"


@dataclass
class ProductionShape:
    redis: EmbeddedRedis
    minio: MinioServer
    weaviate: WeaviateServer
    stack: Stack
    settings: Settings
    client: Client
    api: ApiServer
    bridge: subprocess.Popen[bytes]
    bucket: str
    log_dir: Path

    def s3(self) -> Minio:
        """An SDK client, as a platform writing to the bucket would hold."""
        return Minio(
            self.minio.endpoint, access_key=self.minio.access_key, secret_key=self.minio.secret_key, secure=False
        )

    def weaviate_objects_per_upload(self) -> Counter[str]:
        """How many Weaviate objects hold each upload id (exactly-once check)."""
        return Counter(record.upload_id for record in self.client.vectors.iter_records())

    def idle(self) -> bool:
        """Nothing left to do: no notification waiting, no task queued, reserved or retrying."""
        redis = self.client.redis
        waiting = redis.llen(EVENTS_KEY) + sum(queue_lengths(redis).values())
        return waiting == 0 and not unacked_by_queue(redis) and not redis.keys(f"{EVENTS_KEY}:processing:*")

    def logs(self) -> str:
        """Tails of every log, for assertion messages."""
        parts = []
        for path in sorted(self.log_dir.rglob("*.log")):
            parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)


@contextlib.contextmanager
def production_shape(
    root: Path, model_cache: Path, *, versioned: bool = True, worker: dict[str, Any] | None = None
) -> Iterator[ProductionShape]:
    """Start everything under `root` and stop it all on exit (workers first, servers last)."""
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    bucket = f"prod-{uuid.uuid4().hex[:10]}"
    with contextlib.ExitStack() as cleanup:
        redis = EmbeddedRedis(root / "redis", port=0, start_timeout_s=30.0).start()
        cleanup.callback(redis.stop)
        minio = MinioServer(root / "minio", redis_address=f"127.0.0.1:{redis.port}", events_key=EVENTS_KEY).start()
        cleanup.callback(minio.stop)
        weaviate = WeaviateServer(root / "weaviate").start()
        cleanup.callback(weaviate.stop)
        s3 = Minio(minio.endpoint, access_key=minio.access_key, secret_key=minio.secret_key, secure=False)
        s3.make_bucket(bucket)
        if versioned:
            s3.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
        settings = stack_settings(
            root,
            model_cache,
            redis_url=SecretStr(redis.url),
            objects=minio.object_settings(bucket=bucket),
            vectors=weaviate.address.vector_settings(collection=f"Prod{uuid.uuid4().hex[:8]}"),
            bridge={"block_s": 0.2, "reclaim_idle_s": 2, "minio_notify_arn": minio.notify_arn},
            api={"keys": SecretStr(API_KEY), "search_timeout_s": 60},
            worker=worker or {},
        )
        stack = Stack(settings, log_dir=log_dir).start(ready_timeout_s=180)
        cleanup.callback(stack.stop)
        client = Client(settings, source="test")
        cleanup.callback(client.close)
        with (log_dir / "bridge.log").open("ab") as out:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "producers.cli", "bridge"],
                cwd=REPO,
                env=stack.child_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        cleanup.callback(stop_process, bridge, timeout_s=20)
        api = start_api_server(settings)
        cleanup.callback(api.stop)
        shape = ProductionShape(redis, minio, weaviate, stack, settings, client, api, bridge, bucket, log_dir)
        wait_until(lambda: _subscribed(shape), timeout_s=60, what="the bridge to subscribe the bucket", poll_s=0.3)
        yield shape


def _subscribed(shape: ProductionShape) -> bool:
    config = shape.s3().get_bucket_notification(shape.bucket)
    return any(queue.queue == shape.minio.notify_arn for queue in config.queue_config_list)
