"""The search side of the producer API when no worker answers: a query (or the prompt
embeddings) sent to a real Redis broker with no worker consuming it ends as `QueryFailed`
naming what was awaited and who should have answered, and the client stays usable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from producers.client import Client
from producers.query import QueryFailed, worker_reply
from shared.config import Settings
from shared.queue import QueueName, TaskName


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[Client]:
    with Client(Settings(redis_url=SecretStr(redis_url), data_dir=tmp_path), source="test") as client:
        yield client


def test_a_query_nobody_embeds_fails_naming_the_workers(client: Client) -> None:
    with pytest.raises(QueryFailed, match=r"no query embedding within 0 s: are the workers running\?"):
        client.embed_query(text="a cat on a sofa", timeout_s=0.3)
    with pytest.raises(QueryFailed):  # and again: nothing of the first one is left in the way
        client.search(text="a dog", timeout_s=0.3)


def test_a_reply_nobody_sends_fails_with_what_was_awaited(client: Client) -> None:
    result = client.celery.send_task(TaskName.EMBED_PROMPTS, args=[{}], queue=QueueName.GPU)
    with pytest.raises(QueryFailed, match=r"no prompt embeddings within 0 s: are the GPU workers running\?"):
        worker_reply(result, timeout_s=0.3, what="prompt embeddings", workers="GPU workers")
