"""An audio upload whose speech half of the join went missing still ends indexed (or failed
with a reason), never stuck at ``embedded``: the stages run in-process through their Celery
task functions against a real redis-server, the real tiny model, Whisper tiny.en and the
vector store, with the messages they hand on delivered by the test in the order it picks.

- the transcript's task fails for good (poison after its worker crashed on it) once the
  embedding moved the upload to ``embedded``: failing the upload was refused as a stale
  redelivery, and the join waited for the speech part for ever;
- the stall sweeper resends such an upload: each resend used to count as a crash of the
  first stage, so after a few the run was refused as poison (stale again) at every resend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import workers.app
from producers.client import Client
from shared.config import Settings
from shared.events import Stage, UploadStatus
from shared.queue import TaskName
from workers.gpu import GpuRunner
from workers.resources import Resources
from workers.sweeper import StallSweeper
from workers.tasks import cpu, gpu, index, speech

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
MAX_DELIVERIES = 3
TASKS: dict[str, Any] = {
    TaskName.PREPROCESS: cpu.preprocess,
    TaskName.EMBED: gpu.embed,
    TaskName.TRANSCRIBE: speech.transcribe,
    TaskName.EMBED_TRANSCRIPT: gpu.embed_transcript,
    TaskName.INDEX: index.index,
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_url: str) -> Settings:
    return make_settings(redis_url=redis_url, moderation={"enabled": False}, worker={"max_deliveries": MAX_DELIVERIES})


@pytest.fixture
def resources(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Resources]:
    res = Resources(settings, gpu_runner=GpuRunner.from_settings)
    monkeypatch.setattr(workers.app.app, "resources", res)  # what the task functions use
    try:
        yield res
    finally:
        res.close()


@pytest.fixture
def handed_on(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """The messages the stages send on, kept for the test to deliver."""
    sent: list[tuple[str, dict[str, Any]]] = []
    for module in (cpu, gpu, speech):
        monkeypatch.setattr(module, "send_next", lambda task, name, payload, upload_id: sent.append((name, payload)))
    return sent


def deliver(sent: list[tuple[str, dict[str, Any]]], name: str) -> None:
    """Run the first handed-on message for `name` through its task (a first delivery)."""
    found = next(i for i, (task_name, _) in enumerate(sent) if task_name == name)
    _, payload = sent.pop(found)
    TASKS[name].run(payload)


def sweep(sweeper: StallSweeper, redis_conn: redis.Redis, upload_id: str) -> list[str]:
    """One pass of `sweeper` with `upload_id` idle for ages (and the pass lock free)."""
    redis_conn.zadd("omnibind:inflight", {upload_id: 1})
    redis_conn.delete("omnibind:sweeper")
    return sweeper.sweep()


def submit_wav(settings: Settings, upload_id: str) -> None:
    client = Client(settings, source="test")
    try:
        client.submit((SAMPLES / "tone_16k_1s_mono.wav").read_bytes(), upload_id=upload_id, filename="tone.wav")
    finally:
        client.close()


def test_a_transcript_task_that_fails_for_good_after_the_embedding_still_lets_the_upload_be_indexed(
    settings: Settings, resources: Resources, handed_on: list[tuple[str, dict[str, Any]]]
) -> None:
    submit_wav(settings, "speech-poison")
    event = resources.status.pending_event("speech-poison")
    assert event is not None
    cpu.preprocess.run(event.model_dump(mode="json"))
    deliver(handed_on, TaskName.EMBED)  # the embedding first: the upload is embedded, the join waits
    assert resources.status.get("speech-poison").status is UploadStatus.EMBEDDED  # type: ignore[union-attr]
    # The speech worker was killed on this message every time it ran it (a hard time limit, an
    # OOM kill): its next delivery is a poison message.
    for _ in range(MAX_DELIVERIES):
        resources.deliveries.count_delivery("speech-poison", Stage.SPEECH)
    deliver(handed_on, TaskName.TRANSCRIBE)

    deliver(handed_on, TaskName.INDEX)  # before the fix nothing was handed on: StopIteration
    record = resources.status.get("speech-poison")
    assert record is not None and record.status is UploadStatus.INDEXED
    transcript = record.extra.get("transcript")
    assert isinstance(transcript, dict) and "poison_message" in str(transcript.get("error"))
    assert handed_on == []


def test_the_sweeper_s_resend_of_an_upload_stuck_at_embedded_makes_the_missing_part_and_indexes_it(
    settings: Settings, resources: Resources, handed_on: list[tuple[str, dict[str, Any]]], redis_conn: redis.Redis
) -> None:
    submit_wav(settings, "speech-lost")
    event = resources.status.pending_event("speech-lost")
    assert event is not None
    redis_conn.delete("omnibind:cpu")  # the producer's message, delivered here by hand
    sweeper = StallSweeper(
        redis_conn,
        resources.status,
        lambda resent: handed_on.append((TaskName.PREPROCESS, resent.model_dump(mode="json"))),
        prefix=settings.queue_prefix,
        stall_timeout_s=0.001,
        interval_s=0.01,
        max_resends=MAX_DELIVERIES,
    )
    cpu.preprocess.run(event.model_dump(mode="json"))
    deliver(handed_on, TaskName.EMBED)
    # The transcript's message is lost with its worker (kill -9 between BRPOP and the unacked
    # record): the upload stays at embedded, its join without the speech part. Each sweep
    # resends it; the resent run is lost the same way (its speech message dropped) a few times.
    handed_on.clear()
    for _ in range(MAX_DELIVERIES - 1):
        assert sweep(sweeper, redis_conn, "speech-lost") == ["speech-lost"]
        deliver(handed_on, TaskName.PREPROCESS)
        deliver(handed_on, TaskName.EMBED)
        handed_on.clear()  # the transcript lost again
    assert sweep(sweeper, redis_conn, "speech-lost") == ["speech-lost"]
    # This time every message arrives, the transcript before the embedding.
    deliver(handed_on, TaskName.PREPROCESS)  # before the fix: a poison message, refused as stale
    deliver(handed_on, TaskName.TRANSCRIBE)
    deliver(handed_on, TaskName.EMBED)
    deliver(handed_on, TaskName.INDEX)
    record = resources.status.get("speech-lost")
    assert record is not None and record.status is UploadStatus.INDEXED
    assert isinstance(record.extra.get("transcript"), dict)


def test_an_upload_the_sweeper_resent_too_often_is_failed_with_a_reason(
    settings: Settings, resources: Resources, handed_on: list[tuple[str, dict[str, Any]]], redis_conn: redis.Redis
) -> None:
    submit_wav(settings, "speech-gone")
    redis_conn.delete("omnibind:cpu")
    sweeper = StallSweeper(
        redis_conn,
        resources.status,
        lambda resent: handed_on.append((TaskName.PREPROCESS, resent.model_dump(mode="json"))),
        prefix=settings.queue_prefix,
        stall_timeout_s=0.001,
        interval_s=0.01,
        max_resends=MAX_DELIVERIES,
    )
    for _ in range(MAX_DELIVERIES):  # every resend lost
        assert sweep(sweeper, redis_conn, "speech-gone") == ["speech-gone"]
    assert sweep(sweeper, redis_conn, "speech-gone") == []
    record = resources.status.get("speech-gone")
    assert record is not None and record.status is UploadStatus.FAILED and record.error_reason == "stalled"
    assert resources.dead_letters.length() == 1


def test_a_half_whose_message_names_other_parts_still_completes_the_join_the_cpu_stage_opened(
    settings: Settings, resources: Resources, handed_on: list[tuple[str, dict[str, Any]]]
) -> None:
    # The stuck uploads of the SIGTERM run: the transcript first, then an embedding whose
    # message named the default parts (detectors, embedded), as the GPU half did before
    # cf391b4 and as a message of another version could. The run's own list decides.
    submit_wav(settings, "speech-other-list")
    event = resources.status.pending_event("speech-other-list")
    assert event is not None
    cpu.preprocess.run(event.model_dump(mode="json"))
    deliver(handed_on, TaskName.TRANSCRIBE)
    found = next(i for i, (name, _) in enumerate(handed_on) if name == TaskName.EMBED)
    _, payload = handed_on.pop(found)
    assert payload["join_parts"] == ["embedded", "speech"]
    TASKS[TaskName.EMBED].run({**payload, "join_parts": ["detectors", "embedded"]})
    deliver(handed_on, TaskName.INDEX)  # before: the join waited for detectors for ever
    record = resources.status.get("speech-other-list")
    assert record is not None and record.status is UploadStatus.INDEXED
