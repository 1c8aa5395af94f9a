"""Uploads flow end to end through real processes: redis-server, cpu/gpu/index Celery
workers (tiny random-weight model on CPU), the embedded LanceDB store, and the local or
S3-compatible object store."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from producers.files import iter_files
from shared.events import Modality, UploadStatus
from shared.vectors.records import ALL_TENANTS, SearchFilters
from tests.support.s3_server import S3Server
from tests.support.stack import RunningStack, sample_upload_dir

pytestmark = pytest.mark.integration

IMAGE_SUFFIXES = {".jpg", ".png", ".webp", ".gif", ".bmp", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".webm"}


def omnibind(args: list[str], running: RunningStack, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=running.cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def ingest_and_check_everything_indexed_once(running: RunningStack, folder: Path) -> None:
    files = list(iter_files([folder]))
    suffixes = Counter(path.suffix for path in files)
    assert len(files) >= 30
    assert {".jpg", ".png", ".webp", ".gif", ".wav", ".mp3", ".flac", ".txt"} <= suffixes.keys()

    result = omnibind(["ingest", str(folder), "--wait", "--timeout", "240"], running)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"indexed {len(files)}, failed 0" in result.stdout

    client = running.client
    records = list(client.vectors.iter_records())
    assert len(records) == len(files), "every upload indexed exactly once"
    keys = Counter(record.object.key.split("/", 1)[1] for record in records if record.object)
    assert keys == Counter(path.name for path in files)
    for record in records:
        assert record.object is not None and record.object.bucket == running.settings.objects.bucket
        assert record.object.etag and record.object.size
        assert record.model == "imagebind-tiny-random"
        status = client.status(record.upload_id)
        assert status is not None and status.status is UploadStatus.INDEXED
        name = record.object.key.split("/", 1)[1]
        expected = (
            Modality.IMAGE
            if Path(name).suffix in IMAGE_SUFFIXES
            else Modality.AUDIO
            if Path(name).suffix in AUDIO_SUFFIXES
            else Modality.TEXT
        )
        assert record.modality is expected, name


def test_mixed_uploads_end_indexed_exactly_once_with_object_refs(start_stack, tmp_path: Path) -> None:
    running = start_stack()
    ingest_and_check_everything_indexed_once(running, sample_upload_dir(tmp_path / "uploads"))

    hits = running.client.search(text="a dog playing in the park", k=100)
    assert {hit.record.modality for hit in hits} == {Modality.IMAGE, Modality.TEXT, Modality.AUDIO}
    audio_only = running.client.search(
        text="a dog", k=100, filters=SearchFilters(scope=ALL_TENANTS, modality=Modality.AUDIO)
    )
    assert audio_only and {hit.record.modality for hit in audio_only} == {Modality.AUDIO}


def test_the_same_run_works_against_an_s3_compatible_object_store(
    start_stack, s3_server: S3Server, tmp_path: Path
) -> None:
    running = start_stack(objects=s3_server.object_settings(bucket="omnibind-it"))
    ingest_and_check_everything_indexed_once(running, sample_upload_dir(tmp_path / "uploads"))


def test_an_item_is_searchable_right_after_ingest_wait(start_stack, tmp_path: Path) -> None:
    running = start_stack()
    note = tmp_path / "note.txt"
    note.write_text("a unique sentence about violet giraffes", encoding="utf-8")
    result = omnibind(["ingest", str(note), "--wait"], running)
    assert result.returncode == 0, result.stdout + result.stderr

    result = omnibind(["search", "a unique sentence about violet giraffes", "-k", "1", "--json"], running)
    assert result.returncode == 0, result.stderr
    assert "note.txt" in result.stdout
    assert '"score": 1.0' in result.stdout, "the identical text is its own nearest neighbour"
