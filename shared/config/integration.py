"""The ways in and out beside the API: the bridge (ingest stream, MinIO notifications) and
webhooks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from shared.tenancy import valid_tenant


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
    minio_target_wait_s: float = Field(
        30.0,
        ge=0,
        description="how long a MinIO that does not know minio_notify_arn is asked again "
        "(it loads its notification targets after it starts answering)",
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
