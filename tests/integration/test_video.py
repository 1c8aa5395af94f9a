"""Videos end to end through real processes (redis-server, cpu/gpu/index Celery workers with
the tiny model, LanceDB): a video with sound becomes one record with its frames as the main
vector and its sound as the ``audio_track`` part; a silent video has no part; an audio-only
MP4 stays audio (the committed samples cover that); videos are queries (CLI ``search
--video``), the ``video`` modality filter works, and a damaged container fails with its reason.
Videos also arrive through the bridge: an event on the Redis ingest stream naming an object,
and a live MinIO's bucket notification for an object put into it — and so does speech there
(a spoken WAV by each surface is transcribed by the real offline Whisper)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio
from pydantic import SecretStr

from producers.bridge.minio_events import minio_upload_id
from shared.events import Modality, UploadStatus
from shared.vectors.records import ALL_TENANTS, MAIN_PART, SearchFilters
from tests.integration.test_bridge import INGEST, QUICK_BRIDGE, omnibind_process
from tests.integration.test_pipeline import omnibind
from tests.support.media import video_bytes
from tests.support.minio_server import MinioServer
from tests.support.redis_server import RedisServers
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


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


def test_videos_and_speech_from_the_redis_stream_and_minio_bucket_events_are_indexed_with_their_sound(
    start_stack: Callable[..., RunningStack], redis_servers: RedisServers, tmp_path: Path
) -> None:
    redis = redis_servers.start()
    minio = MinioServer(tmp_path / "minio", redis_address=f"127.0.0.1:{redis.port}").start()
    try:
        s3 = Minio(minio.endpoint, access_key=minio.access_key, secret_key=minio.secret_key, secure=False)
        watched, direct = f"watched-{uuid.uuid4().hex[:8]}", f"direct-{uuid.uuid4().hex[:8]}"
        s3.make_bucket(watched)
        s3.make_bucket(direct)  # not subscribed: its object arrives by a stream event only
        running = start_stack(
            redis_url=SecretStr(redis.url),
            objects=minio.object_settings(bucket=watched),
            bridge={**QUICK_BRIDGE, "minio_notify_arn": minio.notify_arn},
        )
        streamed = video_bytes(seconds=3, fps=10, audio_streams=1)
        s3.put_object(direct, "talk.mp4", io.BytesIO(streamed), len(streamed), content_type="video/mp4")
        threat = (SPEECH / "threat.wav").read_bytes()
        s3.put_object(direct, "voice/threat.wav", io.BytesIO(threat), len(threat), content_type="audio/wav")
        for upload_id, key in (("cms-video-1", "talk.mp4"), ("cms-speech-1", "voice/threat.wav")):
            event = {"id": upload_id, "object": {"bucket": direct, "key": key}}
            running.client.redis.xadd(INGEST, {"event": json.dumps(event)})
        with omnibind_process(["-m", "producers.cli", "bridge"], running, tmp_path / "bridge.log"):
            # the bridge subscribes the watched bucket at start; then a platform puts a video
            wait_until(
                lambda: any(q.queue == minio.notify_arn for q in s3.get_bucket_notification(watched).queue_config_list),
                timeout_s=60,
                what="the bridge to subscribe the bucket",
                poll_s=0.2,
            )
            dropped = video_bytes(seconds=4, fps=10, codec="libvpx-vp9", container="webm", audio_streams=0)
            with_sound = video_bytes(seconds=4, fps=10, audio_streams=1)
            s3.put_object(watched, "clips/with-sound.mp4", io.BytesIO(with_sound), len(with_sound))
            s3.put_object(watched, "clips/silent.webm", io.BytesIO(dropped), len(dropped))
            scam = (SPEECH / "scam.wav").read_bytes()
            s3.put_object(watched, "voice/scam.wav", io.BytesIO(scam), len(scam))
            from_minio = minio_upload_id(watched, "clips/with-sound.mp4")
            silent = minio_upload_id(watched, "clips/silent.webm")
            spoken = minio_upload_id(watched, "voice/scam.wav")
            uploads = ["cms-video-1", from_minio, silent, "cms-speech-1", spoken]
            finished = running.client.wait(uploads, timeout_s=300)
        assert {u: r.status for u, r in finished.items()} == dict.fromkeys(uploads, UploadStatus.INDEXED), (
            tmp_path / "bridge.log"
        ).read_text()
        for upload_id, source in (("cms-video-1", None), (from_minio, "minio")):
            record = running.client.vectors.get(upload_id)
            assert record is not None and record.modality is Modality.VIDEO, upload_id
            assert set(record.parts) == {"audio_track"}, upload_id
            assert source is None or record.source == source
        quiet = running.client.vectors.get(silent)
        assert quiet is not None and quiet.modality is Modality.VIDEO and not quiet.parts
        # Speech by either surface: transcribed, its transcript a vector part of the record.
        for upload_id, words in (("cms-speech-1", "kill you tomorrow"), (spoken, "gift card")):
            transcript = finished[upload_id].extra.get("transcript")
            assert isinstance(transcript, dict) and words in str(transcript["text"]).lower(), transcript
            record = running.client.vectors.get(upload_id)
            assert record is not None and record.modality is Modality.AUDIO and "transcript" in record.parts
    finally:
        minio.stop()
