"""Queue "gpu": ImageBind embeddings, micro-batched across concurrently running tasks."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.errors import TransientError
from shared.events import Modality, Stage
from shared.logs import upload_context
from shared.messages import EmbeddedUpload, PreparedUpload, SpeechPart, SpeechRequest
from shared.moderation.prompts import PromptRequest, PromptStore
from shared.queue import TaskName, is_sparse
from shared.wire import pack_array, unpack_array
from workers.app import app
from workers.handoff import decode_message, send_next
from workers.join import embed_and_join, speech_and_join
from workers.resources import Resources
from workers.stage import advance, run_stage
from workers.tasks.speech import join_failed_transcript


class EmbedTimeout(TransientError):
    reason = "embed_timeout"


@app.task(name=TaskName.EMBED, bind=True)
def embed(self: Task, doc: Any) -> None:
    resources = app.resources
    prepared = decode_message(resources, Stage.EMBED, doc, PreparedUpload.from_wire)
    if prepared is None:
        return
    with upload_context(prepared.event.id):
        urgent = is_sparse(self.request.headers)
        run_stage(
            self, resources, Stage.EMBED, prepared.event, lambda: _embed(self, resources, prepared, urgent=urgent)
        )


def _embed(task: Task, resources: Resources, prepared: PreparedUpload, *, urgent: bool = False) -> None:
    """`urgent`: a sparse tenant's upload, whose items wait for no batch company."""
    runner = resources.gpu
    timeout_s = resources.settings.worker.task_time_limit_s
    try:
        # The parts (a video's audio track) are submitted at once, so they batch with other
        # uploads' items of their modality while the main input runs.
        pending = {
            name: runner.submit(modality, array, urgent=urgent) for name, (modality, array) in prepared.parts.items()
        }
        # A video's sampled frames, as images, for moderation (batched with image uploads).
        frames = [(time_s, runner.submit(Modality.IMAGE, image, urgent=urgent)) for time_s, image in prepared.frames]
        vector = runner.embed(prepared.modality, prepared.array, timeout_s=timeout_s, urgent=urgent)
        parts = {
            name: (prepared.parts[name][0], runner.wait(future, timeout_s=timeout_s))
            for name, future in pending.items()
        }
        frame_vectors = tuple((time_s, runner.wait(future, timeout_s=timeout_s)) for time_s, future in frames)
    except TimeoutError as exc:
        raise EmbedTimeout("no embedding within the task time limit") from exc
    embedded = EmbeddedUpload(
        event=prepared.event,
        modality=prepared.modality,
        vector=vector,
        model=runner.model_name,
        checkpoint=runner.checkpoint,
        facts=prepared.facts,
        join_token=prepared.join_token,
        join_parts=prepared.join_parts,  # which halves the join waits for (detectors, speech)
        parts=parts,
        frame_vectors=frame_vectors,
    )
    # Status before the hand-on: once the next stage's message is out, that stage may write
    # its own (later) status first, and this one would be refused as a step backwards —
    # leaving the record without its "embedded" time.
    advance(resources, Stage.EMBED, prepared.event)
    if embedded.join_token is None:
        send_next(task, TaskName.INDEX, embedded.to_wire(), prepared.event.id)
    else:  # the CPU stage runs detectors meanwhile: whichever half finishes last hands on
        joined = embed_and_join(resources.moderation, embedded)
        if joined is not None:
            send_next(task, TaskName.INDEX, joined.to_wire(), prepared.event.id)


@app.task(name=TaskName.EMBED_TRANSCRIPT, bind=True)
def embed_transcript(self: Task, doc: Any) -> None:
    """The passages of an upload's transcript, embedded as text (batched with everything
    else), stored as the upload's speech part of the join (see workers/tasks/speech.py)."""
    resources = app.resources
    request = decode_message(resources, Stage.SPEECH, doc, SpeechRequest.from_wire)
    if request is None or request.part is None:
        return
    with upload_context(request.event.id):
        run_stage(
            self,
            resources,
            Stage.SPEECH,
            request.event,
            lambda: _embed_transcript(self, resources, request),
            absorb=lambda exc: join_failed_transcript(self, resources, request, exc),
        )


def _embed_transcript(task: Task, resources: Resources, request: SpeechRequest) -> None:
    assert request.part is not None
    runner = resources.gpu
    texts = [passage.text for passage in request.part.transcript.passages]
    try:
        vectors = runner.embed_texts(texts, timeout_s=resources.settings.worker.task_time_limit_s)
    except TimeoutError as exc:
        raise EmbedTimeout("no transcript embedding within the task time limit") from exc
    part = SpeechPart(
        request.part.transcript, vectors, checkpoint=runner.checkpoint, detector_scores=request.part.detector_scores
    )
    joined = speech_and_join(resources.moderation, request, part)
    if joined is not None:
        send_next(task, TaskName.INDEX, joined.to_wire(), request.event.id)


@app.task(name=TaskName.EMBED_QUERY, ignore_result=False)
def embed_query(prepared_query: dict[str, Any]) -> dict[str, Any]:
    """Second half of a search: the query's unit-length embedding, returned to the caller."""
    runner = app.resources.gpu
    modality = Modality(prepared_query["modality"])
    array = unpack_array(prepared_query["array"])
    timeout_s = app.resources.settings.worker.task_time_limit_s
    # One vector per distinct head the backend names for this query (ImageBind: one; PE-AV:
    # a text query has a text-video and a text-audio vector): "targets" says which records
    # each one searches; "vector" is the one for records of the query's own modality.
    heads = runner.embedder.heads_for_query(modality)
    by_head = {head: runner.embed(modality, array, timeout_s=timeout_s, head=head) for head in set(heads.values())}
    targets = {target.value: pack_array(by_head[head]) for target, head in heads.items()}
    own = by_head[heads.get(modality, runner.embedder.head_for_upload(modality))]
    reply = {"vector": pack_array(own), "model": runner.model_name, "checkpoint": runner.checkpoint}
    if len(by_head) > 1:
        reply["targets"] = targets
    return reply


@app.task(name=TaskName.EMBED_PROMPTS, ignore_result=False)
def embed_prompts(request_doc: dict[str, Any]) -> dict[str, Any]:
    """Embed a moderation policy's prompts with this worker's model and cache them in Redis
    (asked for by index workers and `omnibind rescore` for a policy not cached yet)."""
    request = PromptRequest.from_wire(request_doc)
    resources = app.resources
    embeddings = resources.gpu.embed_prompts(request, timeout_s=resources.settings.worker.task_time_limit_s)
    PromptStore(resources.redis, resources.settings.queue_prefix).put(embeddings)
    return {
        "policy_version": embeddings.policy_version,
        "checkpoint": embeddings.checkpoint,
        "model": embeddings.model,
        "prompts": len(embeddings.prompts),
    }
