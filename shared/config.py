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

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.errors import ConfigError


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "omnibind"


class ObjectStoreSettings(BaseModel):
    backend: Literal["local", "minio"] = "local"
    root: Path | None = Field(None, description="local: directory holding buckets (default DATA_DIR/objects)")
    endpoint: str = Field("localhost:9000", description="minio: host:port of the S3 API")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secure: bool = Field(False, description="minio: use HTTPS")
    region: str | None = None
    bucket: str = Field("uploads", description="bucket that producers store blobs in")
    max_bytes: int = Field(200 * 1024 * 1024, description="largest object a worker will read")


class VectorStoreSettings(BaseModel):
    backend: Literal["lancedb", "weaviate"] = "lancedb"
    path: Path | None = Field(None, description="lancedb: directory (default DATA_DIR/vectors)")
    url: str | None = Field(None, description="weaviate: HTTP URL, e.g. http://weaviate:8080")
    grpc_port: int = 50051
    api_key: SecretStr | None = None
    collection: str = "OmnibindUpload"
    table: str = Field("uploads", description="lancedb: table name")


class ModelSettings(BaseModel):
    name: Literal["huge", "tiny"] = Field(
        "huge", description="huge = official ImageBind; tiny = random weights for offline smoke runs"
    )
    checkpoint: Path | None = Field(None, description="local checkpoint file; skips the download")
    url: str = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
    sha256: str | None = Field(
        None, description="expected SHA-256 of the checkpoint (pinned on first download if unset)"
    )
    cache_dir: Path = Field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"))
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
    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 64_000_000
    max_audio_s: float = 600.0
    max_text_chars: int = 20_000


class GpuSettings(BaseModel):
    max_batch: int = Field(64, ge=1)
    max_wait_ms: float = Field(10.0, ge=0)


class WorkerSettings(BaseModel):
    cpu_concurrency: int = Field(0, description="0 = one process per core")
    visibility_timeout_s: float = 600.0
    task_time_limit_s: float = 300.0
    max_deliveries: int = 5
    max_retries: int = 8
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 120.0


class ModerationSettings(BaseModel):
    enabled: bool = True
    policy: Path | None = Field(None, description="policy file (default: the one shipped with omnibind)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OMNIBIND_",
        env_nested_delimiter="__",
        secrets_dir=os.environ.get("OMNIBIND_SECRETS_DIR") or None,
        secrets_nested_delimiter="__",
        extra="ignore",
    )

    redis_url: SecretStr | None = Field(
        None, description="Redis for broker, status and streams; unset = start the embedded redis-server"
    )
    data_dir: Path = Field(default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share"))
    log_level: str = "INFO"
    queue_prefix: str = Field("omnibind", description="prefix of every Redis key omnibind writes")

    objects: ObjectStoreSettings = ObjectStoreSettings()
    vectors: VectorStoreSettings = VectorStoreSettings()
    model: ModelSettings = ModelSettings()
    limits: LimitSettings = LimitSettings()
    gpu: GpuSettings = GpuSettings()
    worker: WorkerSettings = WorkerSettings()
    moderation: ModerationSettings = ModerationSettings()

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
