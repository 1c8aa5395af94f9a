"""OMNIBIND_MODEL__NAME=pe-av-tiny runs the whole pipeline in real processes (redis-server,
cpu/gpu/index Celery workers, embedded LanceDB, local objects): the cpu workers make PE-AV's
wire arrays (its tokenizer, 48 kHz audio), the gpu worker loads the tiny PE-AV saved in the
transformers format, every record says which model and checkpoint made its vector, and a
text query searches each modality with its own head's vector."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from producers.files import iter_files
from shared.events import Modality, UploadStatus
from shared.models.perception_files import WEIGHTS, tiny_dir
from shared.vectors.records import ALL_TENANTS, SearchFilters
from tests.support.stack import SAMPLES, sample_upload_dir

pytestmark = pytest.mark.integration


def test_the_pipeline_indexes_every_modality_with_the_pe_av_family(start_stack, tmp_path: Path) -> None:
    running = start_stack(model={"name": "pe-av-tiny"})
    folder = sample_upload_dir(tmp_path / "uploads")
    files = list(iter_files([folder]))
    result = subprocess.run(
        [sys.executable, "-m", "producers.cli", "ingest", str(folder), "--wait", "--timeout", "240"],
        env=running.cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"indexed {len(files)}, failed 0" in result.stdout

    client = running.client
    records = list(client.vectors.iter_records())
    assert len(records) == len(files)
    weights = tiny_dir(running.settings.model.cache_dir) / WEIGHTS
    fingerprint = hashlib.sha256(weights.read_bytes()).hexdigest()
    for record in records:
        assert record.model == "pe-av-tiny-random" and record.checkpoint == fingerprint
        assert record.vector.shape == (32,), "PE-AV tiny's 32-d space, not ImageBind's"
        status = client.status(record.upload_id)
        assert status is not None and status.status is UploadStatus.INDEXED
    assert Counter(r.modality for r in records).keys() == {Modality.IMAGE, Modality.TEXT, Modality.AUDIO}

    query = client.embed_query_with_model(text="a dog barking")
    assert query.model == "pe-av-tiny-random" and query.targets is not None
    assert set(query.targets) == {Modality.IMAGE, Modality.TEXT, Modality.AUDIO, Modality.VIDEO}
    assert not (query.targets[Modality.AUDIO] == query.targets[Modality.IMAGE]).all(), "two heads"

    hits = client.search(text="a dog barking", k=100)
    assert {hit.record.modality for hit in hits} == {Modality.IMAGE, Modality.TEXT, Modality.AUDIO}
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True), "merged best first"
    audio_only = client.search(text="a dog", k=100, filters=SearchFilters(scope=ALL_TENANTS, modality=Modality.AUDIO))
    assert audio_only and {hit.record.modality for hit in audio_only} == {Modality.AUDIO}
    by_image = client.search(image=(SAMPLES / "rgb_landscape_640x427.jpg").read_bytes(), k=1)
    assert by_image[0].record.object is not None and by_image[0].record.object.key.endswith("rgb_landscape_640x427.jpg")
    assert by_image[0].score == pytest.approx(1.0, abs=1e-4), "the same image is its own nearest neighbour"
