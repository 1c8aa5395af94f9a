"""Queue "speech": the transcript of an audio upload (faster-whisper), beside its embedding.

The CPU stage sends an audio upload to the GPU queue and here at once; the transcript goes
on to the GPU queue (``omnibind.embed_transcript``: its passages embedded as text), and meets
the upload's embedding in `workers.join_store` as the ``speech`` part. A transcript that
cannot be made (undecodable track, no model) is recorded as the part's error, never as a
failed upload: the upload still has its ImageBind embedding; so is a speech task that
fails for good (`join_failed_transcript`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from shared.errors import CheckpointError, ConfigError, CorruptMedia, LimitExceeded, OmnibindError, UnsupportedMedia
from shared.events import Modality, Stage
from shared.logs import upload_context
from shared.media.decoded import DecodedMedia
from shared.media.speech_audio import decode_for_speech
from shared.messages import SpeechPart, SpeechRequest
from shared.queue import TaskName
from shared.speech.transcript import Transcript
from workers.app import app
from workers.handoff import decode_message, send_next
from workers.join import speech_and_join
from workers.preprocess import fetch_blob
from workers.resources import Resources
from workers.stage import run_stage

log = logging.getLogger(__name__)


@app.task(name=TaskName.TRANSCRIBE, bind=True)
def transcribe(self: Task, doc: Any) -> None:
    resources = app.resources
    request = decode_message(resources, Stage.SPEECH, doc, SpeechRequest.from_wire)
    if request is None:
        return
    with upload_context(request.event.id):
        run_stage(
            self,
            resources,
            Stage.SPEECH,
            request.event,
            lambda: _transcribe(self, resources, request),
            absorb=lambda exc: join_failed_transcript(self, resources, request, exc),
        )


def join_failed_transcript(task: Task, resources: Resources, request: SpeechRequest, exc: OmnibindError) -> None:
    """A speech task that failed for good (poison, time limit, error past its retries) still
    delivers its part of the join — a transcript carrying the error — and hands the upload on
    when the other parts are there. Failing the upload instead would be refused once its
    embedding moved it to ``embedded`` (a stage the run went past), and the join would wait
    for this part forever: the upload stuck at ``embedded``, re-sent by the sweeper for ever."""
    part = SpeechPart(Transcript(error=f"{exc.reason}: {exc.message}"))
    joined = speech_and_join(resources.moderation, request, part)
    if joined is not None:
        send_next(task, TaskName.INDEX, joined.to_wire(), request.event.id)


def _transcribe(task: Task, resources: Resources, request: SpeechRequest) -> None:
    settings = resources.settings
    event, data = fetch_blob(resources.objects, request.event, max_bytes=settings.limits.max_bytes)
    try:
        audio = decode_for_speech(data, max_s=settings.speech.max_minutes * 60)
    except (CorruptMedia, UnsupportedMedia, LimitExceeded) as exc:
        transcript = Transcript(error=f"{exc.reason}: {exc.message}")
    else:
        try:
            runner = resources.speech
        except (ConfigError, CheckpointError) as exc:
            transcript = Transcript(error=f"speech model unavailable: {exc}")
        else:
            transcript = runner.transcribe(audio)
    log.info(
        "transcribed %.1f s of %.1f s (%s, %d segments)%s",
        transcript.transcribed_s,
        transcript.duration_s,
        transcript.language,
        len(transcript.segments),
        f": {transcript.error}" if transcript.error else "",
    )
    part = SpeechPart(transcript, detector_scores=_text_detector_scores(resources, transcript))
    if transcript.passages:  # embedded as text by the GPU workers, then joined there
        send_next(task, TaskName.EMBED_TRANSCRIPT, _with_part(request, part).to_wire(), event.id)
        return
    joined = speech_and_join(resources.moderation, request, part)
    if joined is not None:
        send_next(task, TaskName.INDEX, joined.to_wire(), event.id)


def _with_part(request: SpeechRequest, part: SpeechPart) -> SpeechRequest:
    return SpeechRequest(request.event, request.join_token, request.join_parts, part)


def _text_detector_scores(resources: Resources, transcript: Transcript) -> tuple[dict[str, dict[str, float]], ...]:
    """Per passage, the enabled text detectors' scores (the abusive-language classifier)."""
    runtime = resources.moderation
    if not runtime.enabled or not runtime.detectors.for_modality(Modality.TEXT):
        return ()
    out = []
    for passage in transcript.passages:
        results = runtime.detectors.run(DecodedMedia(Modality.TEXT, text=passage.text))
        out.append({r.name: dict(r.scores) for r in results if r.error is None})
    return tuple(out)
