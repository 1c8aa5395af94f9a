"""Queue "cpu": fetch, sniff, validate and decode uploads into model-ready arrays."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery import Task

from shared.events import Modality, Stage, UploadEvent, parse_upload_event
from shared.logs import upload_context
from shared.messages import Query, SpeechRequest
from shared.models.preprocessing import preprocessor_for
from shared.queue import TaskName
from shared.wire import pack_array
from workers.app import app
from workers.handoff import decode_message, send_next, wait_for_gpu_room
from workers.join import detect_and_join, new_join_token, open_join
from workers.join_store import DETECTORS_PART, EMBEDDED_PART, SPEECH_PART
from workers.preprocess import AUDIO_TRACK, fetch_blob, prepare_query, prepare_upload_and_media
from workers.resources import Resources
from workers.stage import advance, run_stage

log = logging.getLogger(__name__)


@app.task(name=TaskName.PREPROCESS, bind=True)
def preprocess(self: Task, event_doc: Any) -> None:
    resources = app.resources
    event = decode_message(resources, Stage.PREPROCESS, event_doc, parse_upload_event)
    if event is None:
        return
    with upload_context(event.id):
        run_stage(self, resources, Stage.PREPROCESS, event, lambda: _preprocess(self, resources, event))


def _preprocess(task: Task, resources: Resources, event: UploadEvent) -> None:
    settings = resources.settings
    # Before the array exists: while the GPU stage lags, uploads wait here as small events
    # instead of as ~0.2 MB arrays in Redis (shared.backpressure).
    wait_for_gpu_room(resources)
    event, data = fetch_blob(resources.objects, event, max_bytes=settings.limits.max_bytes)
    prepared, media = prepare_upload_and_media(
        event,
        data,
        settings.limits,
        audio_mode=settings.model.audio_mode,
        preprocessor=preprocessor_for(settings.model),
    )
    detect = settings.moderation.enabled and bool(resources.moderation.detectors.for_modality(prepared.modality))
    # Audio, and a video's audio track, is transcribed on the speech queue meanwhile; the
    # transcript joins like detectors do. (A video whose track was left out — none, or over
    # the audio limit — is not transcribed.)
    speech = settings.speech.enabled and (
        prepared.modality is Modality.AUDIO or (prepared.modality is Modality.VIDEO and AUDIO_TRACK in prepared.parts)
    )
    if detect or speech:
        parts = (EMBEDDED_PART, *((DETECTORS_PART,) if detect else ()), *((SPEECH_PART,) if speech else ()))
        prepared = dataclasses.replace(prepared, join_token=new_join_token(), join_parts=parts)
        open_join(resources.moderation, prepared)
    # Status first (see workers/tasks/gpu.py: a later stage must not overtake this write),
    # then embedding, detectors meanwhile: both halves meet in workers.join_store.
    advance(resources, Stage.PREPROCESS, event, modality=prepared.modality, object_ref=event.object)
    send_next(task, TaskName.EMBED, prepared.to_wire(), event.id)
    if speech:
        assert prepared.join_token is not None
        request = SpeechRequest(event, prepared.join_token, prepared.join_parts)
        send_next(task, TaskName.TRANSCRIBE, request.to_wire(), event.id)
    log.debug(
        "preprocessed %s as %s%s",
        prepared.facts.content_type,
        prepared.modality.value,
        " (declared type differs)" if prepared.facts.type_mismatch else "",
    )
    if detect:
        joined = detect_and_join(resources.moderation, prepared, media)
        if joined is not None:
            send_next(task, TaskName.INDEX, joined.to_wire(), event.id)


# The array is passed on by the chain, never stored; an error is stored, because only then
# does Celery propagate it to the chain's last result, which the searching client waits on
# (otherwise a bad query file costs the client its whole timeout).
@app.task(name=TaskName.PREPARE_QUERY, ignore_result=True, store_errors_even_if_ignored=True)
def prepare_query_task(query_doc: dict[str, Any]) -> dict[str, Any]:
    """First half of a search: the query's model-ready array (passed on by the chain)."""
    query = Query.from_wire(query_doc)
    settings = app.resources.settings
    modality, array = prepare_query(query, settings.limits, preprocessor_for(settings.model))
    return {"modality": modality.value, "array": pack_array(array)}
