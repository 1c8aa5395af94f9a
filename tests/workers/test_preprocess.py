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
    prepared = prepare_upload(_event("photo.mp3", content_type="audio/mpeg"), data, LIMITS)
    assert prepared.modality is Modality.IMAGE
    assert prepared.facts.content_type == "image/webp"
    assert prepared.facts.type_mismatch and prepared.facts.declared_content_type == "audio/mpeg"


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
