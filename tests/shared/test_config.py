from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import ConfigError


def test_nested_settings_come_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIBIND_OBJECTS__BACKEND", "minio")
    monkeypatch.setenv("OMNIBIND_GPU__MAX_BATCH", "32")
    monkeypatch.setenv("OMNIBIND_REDIS_URL", "redis://:pw@host:6379/0")
    settings = load_settings()
    assert settings.objects.backend == "minio"
    assert settings.gpu.max_batch == 32
    assert settings.redis_url is not None and "pw" not in repr(settings)


def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIBIND_GPU__MAX_BATCH", "zero")
    with pytest.raises(ConfigError, match="OMNIBIND_GPU__MAX_BATCH"):
        load_settings()


def test_secrets_can_come_from_a_secrets_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "omnibind_redis_url").write_text("redis://:from-file@h:1/0")
    (tmp_path / "omnibind_objects__secret_key").write_text("minio-secret")
    from shared.config import Settings

    settings = Settings(_secrets_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:from-file@h:1/0"
    assert settings.objects.secret_key is not None
    assert settings.objects.secret_key.get_secret_value() == "minio-secret"
