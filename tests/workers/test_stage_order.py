"""A stage writes its own status before it hands the upload on.

Once the next stage's message is out, that stage can run and write its later status
first; a status arriving after it would be refused as a step backwards and the record
would miss that stage's time. The tasks run here in-process against a real redis-server;
the hand-on is observed at the moment the next stage's message would leave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from shared.config import Settings
from shared.events import UploadEvent, UploadStatus
from workers.gpu import GpuRunner
from workers.preprocess import prepare_upload_and_media
from workers.resources import Resources
from workers.tasks import cpu, gpu


@pytest.fixture
def resources(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Resources]:
    settings = make_settings(redis_url=redis_url, moderation={"enabled": False})
    res = Resources(settings, gpu_runner=GpuRunner.from_settings)
    try:
        yield res
    finally:
        res.close()


def status_when_handed_on(monkeypatch: pytest.MonkeyPatch, module: ModuleType, resources: Resources) -> list[Any]:
    """Replace the module's `send_next` with one that notes the record's status at the
    moment the next stage's message would be sent."""
    seen: list[Any] = []

    def send_next(task: Any, name: str, payload: dict[str, Any], upload_id: str) -> None:
        record = resources.status.get(upload_id)
        seen.append((name, record.status if record else None))

    monkeypatch.setattr(module, "send_next", send_next)
    return seen


def test_preprocess_records_preprocessed_before_the_embed_message_leaves(
    monkeypatch: pytest.MonkeyPatch, resources: Resources
) -> None:
    event = UploadEvent(id="order-1", text="a red circle on white")
    resources.status.create(event)
    seen = status_when_handed_on(monkeypatch, cpu, resources)

    cpu._preprocess(None, resources, event)  # type: ignore[arg-type]

    assert seen == [("omnibind.embed", UploadStatus.PREPROCESSED)]


def test_embed_records_embedded_before_the_index_message_leaves(
    monkeypatch: pytest.MonkeyPatch, resources: Resources
) -> None:
    event = UploadEvent(id="order-2", text="a red circle on white")
    resources.status.create(event)
    prepared, _ = prepare_upload_and_media(event, event.text.encode(), resources.settings.limits)  # type: ignore[union-attr]
    seen = status_when_handed_on(monkeypatch, gpu, resources)

    gpu._embed(None, resources, prepared)  # type: ignore[arg-type]

    assert seen == [("omnibind.index", UploadStatus.EMBEDDED)]
