"""The one settings object.

Every knob is an environment variable with prefix ``OMNIBIND_``; nested groups use ``__``
(``OMNIBIND_OBJECTS__BACKEND=minio``). Secrets may also come from files in
``OMNIBIND_SECRETS_DIR`` (Docker/Kubernetes secrets: one file per variable, named like the
variable, e.g. ``omnibind_objects__secret_key``).

Create it once per process with `get_settings()`; tests build their own `Settings(...)`.
Each group of settings is a model in the module of its part (`storage`, `model`, `pipeline`,
`moderation`, `speech`, `integration`, `redis`, `api`, `admission`); all are importable from
here.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.config.admission import BackpressureSettings, FairnessSettings, QuotaSettings, TenantQuota
from shared.config.api import ApiSettings, MetricsSettings
from shared.config.integration import BridgeSettings, WebhookSettings, WebhookTarget
from shared.config.model import GpuSettings, ModelSettings
from shared.config.moderation import ModerationSettings
from shared.config.paths import xdg_dir
from shared.config.pipeline import IndexSettings, LimitSettings, WorkerSettings
from shared.config.redis import RedisSettings
from shared.config.speech import SpeechSettings
from shared.config.storage import ObjectStoreSettings, VectorStoreSettings
from shared.errors import ConfigError

__all__ = [
    "ApiSettings",
    "BackpressureSettings",
    "BridgeSettings",
    "FairnessSettings",
    "GpuSettings",
    "IndexSettings",
    "LimitSettings",
    "MetricsSettings",
    "ModelSettings",
    "ModerationSettings",
    "ObjectStoreSettings",
    "QuotaSettings",
    "RedisSettings",
    "Settings",
    "SpeechSettings",
    "TenantQuota",
    "VectorStoreSettings",
    "WebhookSettings",
    "WebhookTarget",
    "WorkerSettings",
    "get_settings",
    "load_settings",
]


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
        default_factory=lambda: xdg_dir("XDG_DATA_HOME", ".local/share"),
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
