"""A message on a worker queue that cannot even be decoded — an envelope kombu cannot parse
(100,000 nested brackets, not JSON) or a body nested too deeply for the JSON decoder — ends
as a dead letter with a reason, and the worker goes on with the next upload.

Before: the deep envelope killed the cpu worker ("Unrecoverable error: RecursionError", the
popped message lost with it); the deep body was acked with one CRITICAL log line and no
trace in the dead letters. The messages are pushed with redis-py in kombu's own envelope
format, copied from a real published message (LRANGE of a queue nobody consumes)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from shared.events import UploadStatus
from shared.queue import UPLOAD_HEADER
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DEEP = "[" * 100_000 + "]" * 100_000


def real_envelope(running: RunningStack) -> dict[str, Any]:
    """What kombu stores for one task message: sent to a queue no worker consumes, read back."""
    redis = running.client.redis
    running.client.celery.send_task("omnibind.preprocess", args=[{"id": "template"}], queue="template")
    [raw] = redis.lrange("omnibind:template", 0, -1)
    redis.delete("omnibind:template")
    envelope: dict[str, Any] = json.loads(raw)
    assert set(envelope) >= {"body", "headers", "properties", "content-type"}
    return envelope


def with_json_body(envelope: dict[str, Any], body: str, upload_id: str) -> str:
    """`envelope` carrying `body` as its JSON task body, on the cpu queue."""
    tag = str(uuid.uuid4())
    headers = {**envelope["headers"], "id": tag, UPLOAD_HEADER: upload_id, "argsrepr": f"<upload {upload_id}>"}
    properties = {**envelope["properties"], "delivery_tag": tag, "correlation_id": tag}
    properties["delivery_info"] = {"exchange": "", "routing_key": "cpu"}
    doc = {
        **envelope,
        "body": base64.b64encode(body.encode()).decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": headers,
        "properties": properties,
    }
    return json.dumps(doc)


def test_undecodable_messages_on_the_cpu_queue_are_dead_lettered_and_the_worker_goes_on(start_stack) -> None:
    running: RunningStack = start_stack()
    client, redis = running.client, running.client.redis
    cpu = next(w for w in running.stack.workers if w.kind == "cpu")
    envelope = real_envelope(running)

    poison = [
        with_json_body(envelope, DEEP, "poison-body"),  # a valid envelope, a body too deep to decode
        DEEP,  # an envelope kombu cannot parse
        "not json at all",
        json.dumps(["an", "array"]),  # JSON, but not an envelope
    ]
    for raw in poison:
        redis.lpush("omnibind:cpu", raw)
    after = client.submit_text("an ordinary caption after the poison", upload_id="after-poison")
    finished = client.wait([after], timeout_s=120)

    assert finished[after].status is UploadStatus.INDEXED
    letters = wait_until(
        lambda: found if len(found := client.dead_letters.entries()) >= len(poison) else None,
        timeout_s=60,
        what="a dead letter per poison message",
    )
    assert sorted((d.stage, d.reason) for d in letters) == sorted(
        [("decode", "too_deep"), ("decode", "too_deep"), ("decode", "invalid_message"), ("decode", "invalid_message")]
    )
    [body_letter] = [d for d in letters if d.upload_id == "poison-body"]
    assert body_letter.event.startswith("[[[[")
    assert cpu.process.poll() is None, "the cpu worker survives"
    assert redis.llen("omnibind:cpu") == 0
    wait_until(lambda: redis.hlen("omnibind:unacked") == 0, timeout_s=30, what="every message to be acked")
    record = client.status("poison-body")
    assert record is None, "a poison message does not create or fail the upload it names"
