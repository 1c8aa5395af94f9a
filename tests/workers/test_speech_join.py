"""The transcript meets the embedding whichever comes first: the speech part and the GPU's
embedded part of one audio upload, joined in a real redis-server by the workers' own code
(`gpu._embed` with the tiny model, `speech_and_join`), in both orders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.events import ObjectRef, UploadEvent
from shared.messages import EmbeddedUpload, SpeechPart, SpeechRequest
from shared.speech.transcript import Transcript
from workers.gpu import GpuRunner
from workers.join import new_join_token, speech_and_join
from workers.join_store import EMBEDDED_PART, SPEECH_PART
from workers.preprocess import prepare_upload_and_media
from workers.resources import Resources
from workers.tasks import gpu

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


@pytest.fixture
def resources(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Resources]:
    res = Resources(
        make_settings(redis_url=redis_url, moderation={"enabled": False}), gpu_runner=GpuRunner.from_settings
    )
    try:
        yield res
    finally:
        res.close()


def audio_upload(resources: Resources, upload_id: str) -> tuple[Any, SpeechRequest]:
    data = (SAMPLES / "tone_16k_1s_mono.wav").read_bytes()
    event = UploadEvent(id=upload_id, object=ObjectRef(bucket="uploads", key=f"{upload_id}.wav"))
    resources.status.create(event)
    prepared, _ = prepare_upload_and_media(event, data, resources.settings.limits)
    token = new_join_token()
    prepared = dataclasses.replace(prepared, join_token=token, join_parts=(EMBEDDED_PART, SPEECH_PART))
    return prepared, SpeechRequest(event, token, prepared.join_parts)


def handed_on(monkeypatch: pytest.MonkeyPatch) -> list[EmbeddedUpload]:
    sent: list[EmbeddedUpload] = []
    monkeypatch.setattr(
        gpu, "send_next", lambda task, name, payload, upload_id: sent.append(EmbeddedUpload.from_wire(payload))
    )
    return sent


SILENT = SpeechPart(Transcript(model="faster-whisper/tiny.en", duration_s=1.0, notes=("no speech found",)))


def test_the_transcript_first_then_the_embedding_hands_the_upload_on(
    monkeypatch: pytest.MonkeyPatch, resources: Resources
) -> None:
    prepared, request = audio_upload(resources, "join-speech-first")
    sent = handed_on(monkeypatch)
    assert speech_and_join(resources.moderation, request, SILENT) is None  # the embedding is not there yet
    gpu._embed(None, resources, prepared)  # type: ignore[arg-type]
    assert len(sent) == 1 and sent[0].speech is not None
    assert sent[0].speech.transcript.notes == ("no speech found",)


def test_the_embedding_first_then_the_transcript_completes_the_join(
    monkeypatch: pytest.MonkeyPatch, resources: Resources
) -> None:
    prepared, request = audio_upload(resources, "join-embedding-first")
    sent = handed_on(monkeypatch)
    gpu._embed(None, resources, prepared)  # type: ignore[arg-type]
    assert sent == []  # waits for the transcript
    joined = speech_and_join(resources.moderation, request, SILENT)
    assert joined is not None and joined.speech is not None and joined.vector.shape == (32,)
