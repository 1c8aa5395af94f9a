"""Three no-op stages wired exactly like omnibind's (same Celery configuration, queues,
pools, message sizes): the floor that Celery, kombu and Redis alone put under the pipeline.
Used by bench/celery_floor.py; not part of the product."""

from __future__ import annotations

from typing import Any

from shared.config import get_settings
from shared.queue import make_celery, upload_headers

app = make_celery(get_settings(), "omnibind-floor")
DONE_KEY = "omnibind-floor:done"


def _forward(name: str, queue: str, payload: dict[str, Any]) -> None:
    app.send_task(
        name,
        args=[payload],
        queue=queue,
        ignore_result=True,
        argsrepr="<upload>",
        kwargsrepr="{}",
        headers=upload_headers(payload["id"]),
    )


@app.task(name="floor.preprocess")
def preprocess(event: dict[str, Any]) -> None:
    # Like a text upload after preprocessing: the event plus 77 int32 tokens.
    _forward("floor.embed", "gpu", {**event, "tokens": bytes(77 * 4)})


@app.task(name="floor.embed")
def embed(message: dict[str, Any]) -> None:
    # Like an embedded upload: the event plus a 1024-d float32 vector.
    _forward("floor.index", "index", {"id": message["id"], "event": message, "vector": bytes(1024 * 4)})


@app.task(name="floor.index")
def index(message: dict[str, Any]) -> None:
    with app.pool.acquire(block=True) as conn:
        conn.default_channel.client.incr(DONE_KEY)
