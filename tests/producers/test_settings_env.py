"""Child processes (workers, the bridge) get their parent's settings through the environment."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from producers.stack import settings_env
from shared.config import Settings


def revealed(settings: Settings) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    return plain(settings.model_dump())  # type: ignore[no-any-return]


def test_settings_survive_the_trip_through_the_environment(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = make_settings(
        redis_url="redis://:p%40ss@localhost:6379/0",
        objects={"backend": "minio", "secret_key": "s3cret", "access_key": "me"},
        bridge={"minio_ignore_prefixes": ["_omnibind/", "exports/"], "stream": False},
        webhooks={
            "targets": {
                "cms": {"url": "https://cms.example/hook?token=x", "secret": "whsec", "statuses": ["failed"]},
                "*": {"url": "http://fallback.local/hook", "secret": "other"},
            }
        },
    )
    for name in [n for n in os.environ if n.startswith("OMNIBIND_")]:
        monkeypatch.delenv(name)
    for name, value in settings_env(parent).items():
        monkeypatch.setenv(name, value)

    child = Settings()

    assert revealed(child) == revealed(parent)
    assert child.webhooks.targets["cms"].secret.get_secret_value() == "whsec"
