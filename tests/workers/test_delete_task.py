"""The delete task never acks a message whose outcome it could not record: with Redis
refusing writes (full under noeviction) the message is rejected back to its queue, and the
pending deletion and its dead letter are written together once Redis accepts writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
import redis
from celery.exceptions import Reject, Retry

from shared.config import Settings
from shared.deletions import DELETION_HEADER, PendingDeletions
from shared.events import DeleteRequest, UploadEvent
from shared.streams import DeadLetterStream
from workers.resources import Resources
from workers.tasks.index import handle_delete


@pytest.fixture
def resources(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Resources]:
    res = Resources(make_settings(redis_url=redis_url, moderation={"enabled": False}))
    try:
        yield res
    finally:
        res.close()


def delivery(token: str, retries: int = 0) -> SimpleNamespace:
    """What the task sees of its message: the retry count and the headers; a retry it asks
    for is Celery's `Retry` (the new message is the next `delivery` with `retries` + 1)."""
    return SimpleNamespace(
        request=SimpleNamespace(retries=retries, headers={DELETION_HEADER: token}),
        retry=lambda **_: Retry("retry", when=0),
    )


def test_a_dead_letter_that_cannot_be_written_keeps_the_message(resources: Resources, redis_conn: redis.Redis) -> None:
    deletions = PendingDeletions(redis_conn)
    token = deletions.record(DeleteRequest(upload_id="doomed"))
    undecodable = {"upload_id": "../not an id"}
    redis_conn.config_set("maxmemory-policy", "noeviction")
    redis_conn.config_set("maxmemory", 1)
    try:
        with pytest.raises(Reject) as rejected:
            handle_delete(delivery(token), resources, undecodable)  # type: ignore[arg-type]
        assert rejected.value.requeue
        assert deletions.count() == 1 and DeadLetterStream(redis_conn).entries() == []
    finally:
        redis_conn.config_set("maxmemory", 0)

    handle_delete(delivery(token), resources, undecodable)  # type: ignore[arg-type]

    assert deletions.count() == 0
    assert [letter.reason for letter in DeadLetterStream(redis_conn).entries()] == ["invalid_event"]


class WorkerKilled(BaseException):
    """Stands for the death of the worker process: nothing of the task's own handling runs."""


def test_a_delete_that_kills_its_worker_every_time_is_dead_lettered_after_max_deliveries(
    make_settings: Callable[..., Settings], redis_url: str, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(redis_url=redis_url, moderation={"enabled": False}, worker={"max_deliveries": 3})
    resources = Resources(settings)
    try:
        deletions = PendingDeletions(redis_conn)
        token = deletions.record(DeleteRequest(upload_id="deadly"))

        def kill_the_worker(ids: list[str]) -> int:
            raise WorkerKilled

        monkeypatch.setattr(resources.vectors, "delete", kill_the_worker)
        for _ in range(3):  # each delivery kills the worker; Redis hands the message out again
            with pytest.raises(WorkerKilled):
                handle_delete(delivery(token), resources, {"upload_id": "deadly"})  # type: ignore[arg-type]

        handle_delete(delivery(token), resources, {"upload_id": "deadly"})  # type: ignore[arg-type]

        letters = DeadLetterStream(redis_conn).entries()
        assert [(letter.stage, letter.reason, letter.upload_id) for letter in letters] == [
            ("delete", "poison_message", "deadly")
        ]
        assert deletions.count() == 0
        assert redis_conn.keys("*deliveries*") == [], "the delivery count goes with the deletion"
    finally:
        resources.close()


def test_two_copies_of_a_delete_waiting_for_its_upload_are_not_taken_for_poison(
    make_settings: Callable[..., Settings], redis_url: str, redis_conn: redis.Redis
) -> None:
    """A worker killed between publishing a delete's retry and acknowledging its message
    leaves two copies retrying side by side while the upload's run is in flight. Before, their
    deliveries were counted together against each copy's retries, and the deletion was
    dead-lettered as poison at the third retry (3 of 200 deletions in a chaos run)."""
    settings = make_settings(redis_url=redis_url, moderation={"enabled": False}, worker={"max_deliveries": 3})
    resources = Resources(settings)
    try:
        deletions = PendingDeletions(redis_conn)
        resources.status.create(UploadEvent(id="busy", text="a caption"))  # its run is in flight
        token = deletions.record(DeleteRequest(upload_id="busy"))
        for retries in range(6):
            for _copy in range(2):
                with pytest.raises(Retry):  # the upload is still in flight: retried, not dead-lettered
                    handle_delete(delivery(token, retries), resources, {"upload_id": "busy"})  # type: ignore[arg-type]
        assert DeadLetterStream(redis_conn).entries() == [] and deletions.count() == 1

        assert resources.status.fail("busy", "preprocess", ValueError("gone"))  # the run ends
        handle_delete(delivery(token, 6), resources, {"upload_id": "busy"})  # type: ignore[arg-type]
        assert deletions.count() == 0 and DeadLetterStream(redis_conn).entries() == []
        assert redis_conn.keys("*deliveries*") == []
    finally:
        resources.close()
