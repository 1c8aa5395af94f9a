"""Video through PE-AV (transformers' PeAudioVideoModel takes `pixel_values_videos` (B, F, 3,
S, S)): the cpu stage samples the card's frames as transformers' PeVideoVideoProcessor does,
the video tower embeds them with the video head, and a video keeps its sound as the part
``audio_track`` (the audio head, the same trained pair)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import GpuSettings, LimitSettings, ModelSettings
from shared.events import Modality, UploadEvent
from shared.messages import Query
from shared.models.catalog import card_for
from shared.models.loader import load_backend
from shared.models.perception import PerceptionBackend
from shared.models.preprocessing import preprocessor_for, uniform_frames
from tests.support.media import video_bytes
from workers.gpu import GpuRunner
from workers.preprocess import AUDIO_TRACK, prepare_query, prepare_upload


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ModelSettings:
    return ModelSettings(name="pe-av-tiny", cache_dir=tmp_path_factory.mktemp("pe-video"), device="cpu")


@pytest.fixture(scope="module")
def backend(settings: ModelSettings) -> PerceptionBackend:
    loaded = load_backend(settings)
    assert isinstance(loaded, PerceptionBackend)
    return loaded


def upload() -> UploadEvent:
    return UploadEvent.model_validate({"object": {"bucket": "b", "key": "u/clip.mp4"}, "source": "test"})


def test_frames_are_sampled_as_transformers_pe_video_processor_samples_them() -> None:
    from transformers.models.pe_video.video_processing_pe_video import PeVideoVideoProcessor
    from transformers.video_utils import VideoMetadata

    processor = PeVideoVideoProcessor()
    for total, count in ((30, 4), (7, 16), (1000, 16), (5, 5)):
        theirs = processor.sample_frames(VideoMetadata(total_num_frames=total, fps=10.0), num_frames=count)
        assert uniform_frames(total, count) == [int(i) for i in theirs]


def test_a_video_upload_becomes_the_cards_frames_and_its_sound_an_audio_track(settings: ModelSettings) -> None:
    data = video_bytes(seconds=3.0, fps=10, width=64, height=48, audio_streams=1)
    prepared = prepare_upload(upload(), data, LimitSettings(), preprocessor=preprocessor_for(settings))
    frames = card_for("pe-av-tiny").video_frames
    assert prepared.modality is Modality.VIDEO
    assert prepared.array.shape == (frames, 3, 32, 32) and prepared.array.dtype == np.uint8
    levels = prepared.array.reshape(frames, -1).mean(axis=1)
    assert len(set(np.round(levels).tolist())) == frames, "frames spread over the video, not one repeated"
    modality, track = prepared.parts[AUDIO_TRACK]
    assert modality is Modality.AUDIO and track.dtype == np.float16 and track.ndim == 1
    assert 1 <= len(prepared.frames) <= 10, "its frames are moderated as images too"
    declared_audio = upload().model_copy(update={"modality": Modality.AUDIO})
    assert (
        prepare_upload(declared_audio, data, LimitSettings(), preprocessor=preprocessor_for(settings)).modality
        is Modality.AUDIO
    )
    query_modality, query = prepare_query(Query(Modality.VIDEO, data=data), LimitSettings(), preprocessor_for(settings))
    assert query_modality is Modality.VIDEO and query.shape == prepared.array.shape


def test_videos_embed_with_the_video_head_unit_length_and_batch_stable(
    backend: PerceptionBackend, settings: ModelSettings
) -> None:
    pre = preprocessor_for(settings)
    limits = LimitSettings()
    clips = [
        prepare_upload(upload(), video_bytes(seconds=seconds, fps=10), limits, preprocessor=pre).array
        for seconds in (2.0, 3.0)
    ]
    together = np.asarray(backend.finish(backend.forward(backend.prepare(Modality.VIDEO, np.stack(clips)))))
    assert together.shape == (2, backend.out_dim)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    for clip, vector in zip(clips, together, strict=True):
        alone = backend.finish(backend.forward(backend.prepare(Modality.VIDEO, clip[None])))[0]
        np.testing.assert_allclose(alone, vector, atol=1e-5)
    assert not np.allclose(together[0], together[1])
    reversed_frames = backend.finish(backend.forward(backend.prepare(Modality.VIDEO, clips[1][None, ::-1].copy())))[0]
    assert not np.allclose(reversed_frames, together[1], atol=1e-4), "the frames' order is seen (a video, not a bag)"
    assert backend.head_for_upload(Modality.VIDEO) == "video"
    assert backend.heads_for_query(Modality.TEXT)[Modality.VIDEO] == "video"
    with pytest.raises(Exception, match="videos must be uint8"):
        backend.prepare(Modality.VIDEO, np.zeros((1, 4, 3, 32, 32), np.float32))


def test_the_gpu_runner_embeds_a_pe_av_video_like_the_backend(
    backend: PerceptionBackend, settings: ModelSettings
) -> None:
    clip = prepare_upload(
        upload(), video_bytes(seconds=2.0, fps=10), LimitSettings(), preprocessor=preprocessor_for(settings)
    ).array
    runner = GpuRunner(backend, GpuSettings(max_batch=8, max_wait_ms=5), preprocessor_for(settings))
    try:
        vector = runner.embed(Modality.VIDEO, clip, timeout_s=60)
    finally:
        runner.close()
    expected = backend.finish(backend.forward(backend.prepare(Modality.VIDEO, clip[None])))[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)
