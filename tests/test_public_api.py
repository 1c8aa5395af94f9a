"""`import omnibind` is the Python API a user reads about: the client (sync and asyncio), the
public types, a version, and type information (`py.typed`) for their type checker."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import omnibind
from shared.events import UploadStatus

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "producers" / "samples"


def test_every_public_name_resolves_and_the_version_is_the_package_version() -> None:
    missing = [name for name in omnibind.__all__ if not hasattr(omnibind, name)]
    assert missing == []
    assert omnibind.__version__ == version("omnibind")
    assert omnibind.Client.__module__ == "producers.client"
    assert issubclass(omnibind.Busy, omnibind.TransientError)
    assert omnibind.SearchFilters(scope=omnibind.tenants("acme")).scope == frozenset({"acme"})


def test_the_wheel_ships_type_information_for_every_package(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("omnibind", "shared", "producers", "workers"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip_wheel, "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("omnibind-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"omnibind/py.typed", "shared/py.typed", "producers/py.typed", "workers/py.typed"} <= names
    assert "omnibind/aio.py" in names


@pytest.mark.integration
def test_the_asyncio_client_submits_waits_and_searches(start_stack) -> None:
    running = start_stack()

    async def session() -> tuple[dict[str, omnibind.StatusRecord], list[omnibind.SearchHit]]:
        async with omnibind.AsyncClient(running.settings, source="test") as client:
            ids = await asyncio.gather(
                client.submit(SAMPLES / "red-circle.png", tenant="acme"),
                client.submit_text("a dog running on a beach", tenant="acme"),
            )
            ended = await client.wait(ids, timeout_s=180)
            hits = await client.search(
                text="a red circle", k=5, filters=omnibind.SearchFilters(scope=omnibind.tenants("acme"))
            )
            return ended, hits

    ended, hits = asyncio.run(session())
    assert sorted(record.status for record in ended.values()) == [UploadStatus.INDEXED, UploadStatus.INDEXED]
    assert {hit.record.upload_id for hit in hits} == set(ended)
