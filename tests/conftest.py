"""Fixtures shared by every test package. Fixtures are factories; services are real."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings

# Real-service fixtures (factories) every test package may use.
pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.sentinel",
    "tests.support.netns",
    "tests.support.full_disk",
    "tests.support.s3_server",
    "tests.support.minio_server",
    "tests.support.weaviate_server",
    "tests.support.stack",
    "tests.support.api_server",
    # How `make test` spreads modules over pytest-xdist workers (units of work, chaos lanes).
    "tests.support.scheduling",
]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build a `Settings` rooted in this test's tmp dir, with keyword overrides."""

    def factory(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "model": {"name": "tiny", "cache_dir": tmp_path / "cache"},
        }
        base.update(overrides)
        return Settings(**base)

    return factory
