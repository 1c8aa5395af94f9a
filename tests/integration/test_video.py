"""Videos end to end through real processes (redis-server, cpu/gpu/index Celery workers with
the tiny model, LanceDB): a video with sound becomes one record with its frames as the main
vector and its sound as the ``audio_track`` part; a silent video has no part; an audio-only
MP4 stays audio (the committed samples cover that); videos are queries (CLI ``search
--video``), the ``video`` modality filter works, and a damaged container fails with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.events import Modality
from shared.vectors.records import ALL_TENANTS, MAIN_PART, SearchFilters
from tests.integration.test_pipeline import omnibind
from tests.support.media import video_bytes

pytestmark = pytest.mark.integration


def test_videos_are_indexed_with_their_sound_and_searchable_by_video(start_stack, tmp_path: Path) -> None:
    running = start_stack()
    folder = tmp_path / "uploads"
    folder.mkdir()
    with_sound = video_bytes(seconds=4, fps=10, audio_streams=1)
    (folder / "with-sound.mp4").write_bytes(with_sound)
    (folder / "silent.webm").write_bytes(
        video_bytes(seconds=3, fps=10, codec="libvpx-vp9", container="webm", width=48, height=64)
    )
    (folder / "cut.mp4").write_bytes(with_sound[: len(with_sound) // 2])  # moov atom lost
    (folder / "note.txt").write_text("a red square on a grey background", encoding="utf-8")

    result = omnibind(["ingest", str(folder), "--wait", "--timeout", "240"], running)
    assert "indexed 3, failed 1" in result.stdout, result.stdout + result.stderr

    client = running.client
    records = {record.object.key.rsplit("/", 1)[1]: record for record in client.vectors.iter_records() if record.object}
    assert set(records) == {"with-sound.mp4", "silent.webm", "note.txt"}
    video = records["with-sound.mp4"]
    assert video.modality is Modality.VIDEO and set(video.parts) == {"audio_track"}
    assert records["silent.webm"].modality is Modality.VIDEO and not records["silent.webm"].parts
    failures = [line for line in result.stdout.splitlines() if "FAILED" in line]
    # an MP4 FFmpeg cannot open for want of its moov atom is reported as a truncated video
    assert len(failures) == 1 and "cut.mp4" in failures[0] and "cannot read the mp4 container" in failures[0]

    # the video is its own nearest neighbour by its frames; its sound finds it by the audio track
    out = omnibind(["search", "--video", str(folder / "with-sound.mp4"), "-k", "3", "--json"], running)
    assert out.returncode == 0, out.stdout + out.stderr
    hits = json.loads(out.stdout)
    assert hits[0]["object"]["key"].endswith("with-sound.mp4") and hits[0]["part"] == MAIN_PART
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    by_sound = client.search(audio=with_sound, k=3)
    assert by_sound[0].record.upload_id == video.upload_id and by_sound[0].part == "audio_track"
    assert by_sound[0].score == pytest.approx(1.0, abs=1e-3)
    assert [hit.record.upload_id for hit in by_sound].count(video.upload_id) == 1

    only_videos = client.search(
        text="a red square", k=10, filters=SearchFilters(scope=ALL_TENANTS, modality=Modality.VIDEO)
    )
    assert {hit.record.modality for hit in only_videos} == {Modality.VIDEO} and len(only_videos) == 2
