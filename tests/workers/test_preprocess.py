"""The CPU stage's pure logic on real files (the committed samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.config import LimitSettings
from shared.errors import LimitExceeded, PermanentError, UnsupportedMedia
from shared.events import Modality, ObjectRef, UploadEvent
from shared.messages import Query
from shared.objects.local import LocalObjectStore
from workers.preprocess import ModalityMismatch, fetch_blob, prepare_query, prepare_upload

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
LIMITS = LimitSettings()


def _event(key: str, **fields: object) -> UploadEvent:
    return UploadEvent(
        object=ObjectRef(bucket="uploads", key=key, content_type=fields.pop("content_type", None)), **fields
    )


@pytest.mark.parametrize(
    ("name", "modality", "dtype", "shape"),
    [
        ("rgb_landscape_640x427.jpg", Modality.IMAGE, np.uint8, (3, 224, 224)),
        ("animated_320x240.gif", Modality.IMAGE, np.uint8, (3, 224, 224)),
        ("clip_44100_1s.mp3", Modality.AUDIO, np.float16, (3, 1, 128, 204)),
        ("exact_16k_2s_stereo.wav", Modality.AUDIO, np.float16, (3, 1, 128, 204)),
    ],
)
def test_uploads_become_compact_model_ready_arrays(name: str, modality: Modality, dtype: type, shape: tuple) -> None:
    data = (SAMPLES / name).read_bytes()
    prepared = prepare_upload(_event(name), data, LIMITS)
    assert prepared.modality is modality
    assert prepared.array.dtype == dtype and prepared.array.shape == shape
    assert prepared.facts.size == len(data) and len(prepared.facts.sha256 or "") == 64


def test_text_files_and_inline_texts_become_int32_tokens() -> None:
    from_file = prepare_upload(_event("a.txt"), b"a dog barking", LIMITS)
    inline = prepare_upload(UploadEvent(text="a dog barking"), b"a dog barking", LIMITS)
    assert from_file.modality is inline.modality is Modality.TEXT
    assert from_file.array.dtype == np.int32 and from_file.array.shape == (77,)
    assert np.array_equal(from_file.array, inline.array)


def test_the_content_decides_the_type_and_a_wrong_declaration_is_recorded() -> None:
    data = (SAMPLES / "rgb_500x500.webp").read_bytes()
    prepared = prepare_upload(_event("photo.jpg", content_type="image/jpeg"), data, LIMITS)
    assert prepared.modality is Modality.IMAGE
    assert prepared.facts.content_type == "image/webp"
    assert prepared.facts.type_mismatch and prepared.facts.declared_content_type == "image/jpeg"


def test_a_declared_type_of_another_modality_fails_as_a_disguise() -> None:
    data = (SAMPLES / "rgb_500x500.webp").read_bytes()
    with pytest.raises(UnsupportedMedia, match=r"declared as audio/mpeg \(audio\)") as caught:
        prepare_upload(_event("photo.mp3", content_type="audio/mpeg"), data, LIMITS)
    assert caught.value.reason == "content_type_mismatch"


def test_a_declared_modality_that_contradicts_the_content_fails_permanently() -> None:
    data = (SAMPLES / "tone_16k_1s_mono.wav").read_bytes()
    with pytest.raises(ModalityMismatch, match="declared modality image"):
        prepare_upload(_event("x.wav", modality=Modality.IMAGE), data, LIMITS)


def test_limits_apply_before_decoding() -> None:
    with pytest.raises(LimitExceeded, match="the limit is 100"):
        prepare_upload(_event("big.jpg"), b"\xff" * 101, LimitSettings(max_bytes=100))
    with pytest.raises(LimitExceeded):
        prepare_upload(UploadEvent(text="x" * 11), b"", LimitSettings(max_text_chars=10))
    with pytest.raises(UnsupportedMedia):
        prepare_upload(_event("junk.bin"), bytes(range(256)) * 4, LIMITS)


def test_fetch_pins_the_ref_to_the_bytes_that_were_read(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    ref = store.put("uploads", "u1/a.txt", b"hello", content_type="text/plain")
    event, data = fetch_blob(store, UploadEvent(object=ObjectRef(bucket="uploads", key="u1/a.txt")), max_bytes=100)
    assert data == b"hello"
    assert event.object is not None and event.object.etag == ref.etag and event.object.size == 5
    with pytest.raises(LimitExceeded):
        fetch_blob(store, UploadEvent(object=ObjectRef(bucket="uploads", key="u1/a.txt")), max_bytes=4)


def test_queries_are_prepared_like_uploads() -> None:
    modality, tokens = prepare_query(Query(Modality.TEXT, text="a cat"), LIMITS)
    assert modality is Modality.TEXT and tokens.shape == (77,)
    modality, pixels = prepare_query(Query(Modality.IMAGE, data=(SAMPLES / "small_100x150.png").read_bytes()), LIMITS)
    assert modality is Modality.IMAGE and pixels.shape == (3, 224, 224)
    with pytest.raises(PermanentError, match="needs text or file"):
        prepare_query(Query(Modality.IMAGE), LIMITS)


def test_a_video_with_sound_becomes_fifteen_clips_and_an_audio_track_part() -> None:
    from tests.support.media import video_bytes

    data = video_bytes(seconds=3, fps=10, audio_streams=1)
    prepared = prepare_upload(_event("clip.mp4", content_type="video/mp4"), data, LIMITS)
    assert prepared.modality is Modality.VIDEO
    assert prepared.array.dtype == np.uint16 and prepared.array.shape == (15, 3, 2, 224, 224)
    modality, track = prepared.parts["audio_track"]
    assert modality is Modality.AUDIO and track.dtype == np.float16 and track.shape == (3, 1, 128, 204)
    # the wire form carries the part
    from shared.messages import PreparedUpload

    again = PreparedUpload.from_wire(prepared.to_wire())
    assert again.parts["audio_track"][0] is Modality.AUDIO
    np.testing.assert_array_equal(again.parts["audio_track"][1], track)
    np.testing.assert_array_equal(again.array, prepared.array)


def test_a_silent_video_has_no_parts_and_audio_declared_embeds_the_sound_only() -> None:
    from tests.support.media import video_bytes

    silent = prepare_upload(_event("silent.mp4"), video_bytes(seconds=2, fps=10), LIMITS)
    assert silent.modality is Modality.VIDEO and silent.parts == {}
    sound = prepare_upload(
        _event("clip.mp4", modality=Modality.AUDIO), video_bytes(seconds=2, fps=10, audio_streams=1), LIMITS
    )
    assert sound.modality is Modality.AUDIO and sound.array.shape == (3, 1, 128, 204)
    with pytest.raises(UnsupportedMedia) as caught:
        prepare_upload(_event("silent.mp4", modality=Modality.AUDIO), video_bytes(seconds=2, fps=10), LIMITS)
    assert caught.value.reason == "no_audio_stream"


def test_a_video_over_the_limits_fails_with_its_reason() -> None:
    from tests.support.media import video_bytes

    with pytest.raises(LimitExceeded) as caught:
        prepare_upload(_event("long.mp4"), video_bytes(seconds=3, fps=10), LimitSettings(max_video_s=2))
    assert caught.value.reason == "video_too_long"


def test_a_video_query_is_its_frames() -> None:
    from tests.support.media import video_bytes

    modality, array = prepare_query(Query(Modality.AUTO, data=video_bytes(seconds=2, fps=10, audio_streams=1)), LIMITS)
    assert modality is Modality.VIDEO and array.shape == (15, 3, 2, 224, 224)


def test_a_video_carries_its_sampled_frames_as_images_for_moderation() -> None:
    from shared.messages import PreparedUpload
    from tests.support.media import video_bytes

    prepared = prepare_upload(_event("clip.mp4"), video_bytes(seconds=10, fps=10), LIMITS)
    assert [round(t, 1) for t, _ in prepared.frames] == [0.0, 1.9, 2.0, 3.9, 4.0, 5.9, 6.0, 7.9, 8.0, 9.9]
    assert all(image.dtype == np.uint8 and image.shape == (3, 224, 224) for _, image in prepared.frames)
    again = PreparedUpload.from_wire(prepared.to_wire())
    assert [t for t, _ in again.frames] == [t for t, _ in prepared.frames]
    np.testing.assert_array_equal(again.frames[3][1], prepared.frames[3][1])


def test_an_mp4_cut_before_its_moov_atom_fails_as_a_truncated_video() -> None:
    from tests.support.media import video_bytes

    data = video_bytes(seconds=3, fps=10, audio_streams=1)  # moov written last (no faststart)
    cut = data[: data.index(b"moov") - 4]
    with pytest.raises(PermanentError) as caught:
        prepare_upload(_event("cut.mp4"), cut, LIMITS)
    assert caught.value.reason == "truncated_video" and "moov" in caught.value.message
    # the same cut of an audio file (its major brand says M4A) stays an audio failure
    m4a = (SAMPLES / "clip_44100_1s_aac.m4a").read_bytes()
    assert m4a[8:12] == b"M4A " and m4a.index(b"moov") > m4a.index(b"mdat")
    with pytest.raises(PermanentError) as caught:
        prepare_upload(_event("cut.m4a"), m4a[: m4a.index(b"moov") - 4], LIMITS)
    assert caught.value.reason == "corrupt_audio"


def test_a_subtitle_only_container_fails_with_a_clear_reason() -> None:
    from tests.support.media import subtitle_only_mkv

    data = subtitle_only_mkv()
    with pytest.raises(UnsupportedMedia) as caught:
        prepare_upload(_event("subs.mkv"), data, LIMITS)
    assert caught.value.reason == "no_media_stream" and "subtitle" in caught.value.message
    # asked for its sound, it has none
    with pytest.raises(UnsupportedMedia) as caught:
        prepare_upload(_event("subs.mkv", modality=Modality.AUDIO), data, LIMITS)
    assert caught.value.reason == "no_audio_stream" and "subtitle" in caught.value.message


def test_a_videos_sound_longer_than_the_audio_limit_is_embedded_by_seeking() -> None:
    from tests.support.media import video_with_sound

    data = video_with_sound(seconds=45, rate_hz=16000)
    prepared = prepare_upload(_event("talk.mp4"), data, LimitSettings(max_audio_s=20))
    assert prepared.modality is Modality.VIDEO and prepared.parts["audio_track"][1].shape == (3, 1, 128, 204)
    assert not prepared.facts.notes
