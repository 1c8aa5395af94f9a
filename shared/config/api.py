"""The HTTP API and the metrics exporter."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


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


class MetricsSettings(BaseModel):
    """Prometheus metrics: workers add to counters in Redis, exporters read them."""

    enabled: bool = Field(True, description="workers record metrics in Redis")
    flush_interval_s: float = Field(1.0, gt=0, description="how often a worker process writes its metrics to Redis")
    host: str = Field("127.0.0.1", description="address `omnibind metrics` binds to")
    port: int = Field(9464, ge=0, le=65535, description="port `omnibind metrics` listens on")
