"""`omnibind dead` and `omnibind dead --retry` against a real redis-server (no workers: what
a retry sends is read back from the queue)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from producers.cli import main as cli
from producers.client import Client
from producers.dead_letters import Outcome, retry_dead_letter, select_dead_letters
from shared.config import Settings
from shared.deletions import DELETION_HEADER, deletion_token
from shared.errors import StorageUnavailable
from shared.events import DeleteRequest, ObjectRef, Stage, UploadEvent, UploadStatus
from shared.queue import UPLOAD_HEADER
from shared.streams import dead_letter_fields


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[Client]:
    with Client(Settings(redis_url=SecretStr(redis_url), data_dir=tmp_path), source="test") as client:
        yield client


def dead_upload(client: Client, upload_id: str) -> UploadEvent:
    """An upload that failed for good at preprocess (storage gone), with its dead letter."""
    event = UploadEvent(id=upload_id, object=ObjectRef(bucket="uploads", key=f"{upload_id}/a.jpg"), source="test")
    client.statuses.create(event)
    error = StorageUnavailable("connection refused")
    assert client.statuses.fail(upload_id, Stage.PREPROCESS, error)
    client.dead_letters.dead_letter(
        event.model_dump_json(),
        stage=Stage.PREPROCESS,
        error_class="StorageUnavailable",
        reason=error.reason,
        message=error.message,
        attempts=9,
    )
    return event


def sent_uploads(redis_conn: redis.Redis) -> list[str]:
    """Upload ids of the messages waiting in the cpu queue."""
    return [json.loads(raw)["headers"][UPLOAD_HEADER] for raw in redis_conn.lrange("omnibind:cpu", 0, -1)]


def test_a_retry_starts_a_new_run_sends_it_and_removes_the_dead_letter(client: Client, redis_conn: redis.Redis) -> None:
    event = dead_upload(client, "u1")
    [letter] = client.dead_letters.entries()

    retried = retry_dead_letter(client, letter)

    assert retried.outcome is Outcome.REQUEUED
    record = client.status("u1")
    assert record is not None and record.status is UploadStatus.QUEUED and record.run == 2
    assert client.statuses.pending_event("u1") == event, "kept, so a lost message of the new run can be sent again"
    assert sent_uploads(redis_conn) == ["u1"]
    assert client.dead_letters.length() == 0


def test_an_expired_record_is_created_again(client: Client, redis_conn: redis.Redis) -> None:
    dead_upload(client, "u1")
    redis_conn.delete("omnibind:upload:u1")
    [letter] = client.dead_letters.entries()

    assert retry_dead_letter(client, letter).outcome is Outcome.REQUEUED
    record = client.status("u1")
    assert record is not None and record.status is UploadStatus.QUEUED
    assert sent_uploads(redis_conn) == ["u1"]


def test_an_upload_running_again_already_only_loses_its_dead_letter(client: Client, redis_conn: redis.Redis) -> None:
    event = dead_upload(client, "u1")
    [letter] = client.dead_letters.entries()
    client.statuses.requeue("u1", event)
    client.statuses.advance("u1", UploadStatus.PREPROCESSED)

    retried = retry_dead_letter(client, letter)

    assert retried.outcome is Outcome.IN_FLIGHT and "preprocessed" in retried.detail
    assert sent_uploads(redis_conn) == []
    assert client.dead_letters.length() == 0


def test_a_retry_that_stopped_half_way_is_completed_by_the_next_one(client: Client, redis_conn: redis.Redis) -> None:
    event = dead_upload(client, "u1")
    [letter] = client.dead_letters.entries()
    client.statuses.requeue("u1", event)  # the first retry got this far, then died

    assert retry_dead_letter(client, letter).outcome is Outcome.RESENT
    assert sent_uploads(redis_conn) == ["u1"]
    assert client.dead_letters.length() == 0


def test_a_dead_letter_without_an_upload_event_is_kept(client: Client) -> None:
    client.dead_letters.dead_letter('{"raw": "garbage"}', "embed", "TypeError", "invalid_event", "undecodable", 1)
    [letter] = client.dead_letters.entries()

    retried = retry_dead_letter(client, letter)

    assert retried.outcome is Outcome.UNREADABLE and "not an upload event" in retried.detail
    assert client.dead_letters.length() == 1


def test_dead_letters_are_selected_by_entry_id_or_upload_id(client: Client) -> None:
    for upload_id in ("a", "b", "c"):
        dead_upload(client, upload_id)
    letters = client.dead_letters.entries()

    chosen, missing = select_dead_letters(client, [letters[0].entry_id, "c", "nope"])

    assert [letter.upload_id for letter in chosen] == ["a", "c"]
    assert missing == ["nope"]
    assert len(select_dead_letters(client)[0]) == 3


# -- the command line ----------------------------------------------------------------------------


def omnibind(args: list[str], redis_url: str, tmp_path: Path) -> tuple[int, str, str]:
    env = {"OMNIBIND_REDIS_URL": redis_url, "OMNIBIND_DATA_DIR": str(tmp_path)}
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        result = CliRunner().invoke(cli, args, env=env)
    finally:  # the command configures the root logger; leave it as other tests expect it
        root.setLevel(level)
        root.handlers[:] = handlers
    return result.exit_code, result.stdout, result.stderr


def test_dead_lists_stage_reason_error_class_attempts_and_message(
    client: Client, redis_url: str, tmp_path: Path
) -> None:
    dead_upload(client, "u1")

    code, out, err = omnibind(["dead"], redis_url, tmp_path)

    assert code == 0, err
    row = out.splitlines()[1]
    for column in ("u1", "preprocess", "storage_unavailable", "StorageUnavailable", "9", "connection refused"):
        assert column in row
    assert "1 dead letter(s) in all" in err


def test_dead_json_carries_the_event(client: Client, redis_url: str, tmp_path: Path) -> None:
    event = dead_upload(client, "u1")

    code, out, _ = omnibind(["dead", "--json"], redis_url, tmp_path)

    assert code == 0
    doc = json.loads(out)
    assert doc["upload_id"] == "u1" and UploadEvent.model_validate_json(doc["event"]) == event


def test_dead_retry_reports_each_outcome_and_fails_on_unknown_ids(
    client: Client, redis_conn: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    dead_upload(client, "u1")
    dead_upload(client, "u2")

    code, out, err = omnibind(["dead", "--retry", "u1"], redis_url, tmp_path)
    assert code == 0, err
    assert "u1  requeued" in out and "requeued 1" in err
    assert sent_uploads(redis_conn) == ["u1"]

    code, _, err = omnibind(["dead", "--retry", "missing-id"], redis_url, tmp_path)
    assert code == 1 and "no dead letter missing-id" in err

    code, out, _ = omnibind(["dead", "--retry"], redis_url, tmp_path)
    assert code == 0 and "u2  requeued" in out
    assert client.dead_letters.length() == 0


def dead_deletion(client: Client, request: DeleteRequest) -> str:
    """A deletion that failed for good, left as the delete task leaves it (pending deletion
    forgotten and its dead letter written in one step); returns its token."""
    token = client.deletions.record(request)
    letter = dead_letter_fields(
        request.model_dump_json(),
        "delete",
        "VectorStoreUnavailable",
        "vector_store_unavailable",
        "delete on lancedb table failed",
        3,
        upload_id=request.upload_id,
    )
    client.deletions.done(token, letter)
    return token


def sent_deletions(redis_conn: redis.Redis) -> list[tuple[str, dict[str, object]]]:
    """(deletion token, request) of the delete messages waiting in the index queue."""
    sent = []
    for raw in redis_conn.lrange("omnibind:index", 0, -1):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == "omnibind.delete"
        sent.append((envelope["headers"][DELETION_HEADER], envelope["headers"]["argsrepr"]))
    return sent


def test_a_deletion_s_dead_letter_is_recorded_and_sent_again(client: Client, redis_conn: redis.Redis) -> None:
    """Before: a deletion's dead letter was `unreadable` (it holds no upload event) and stayed."""
    request = DeleteRequest(upload_id="gone-1", reason="object removed")
    token = dead_deletion(client, request)
    assert client.deletions.get(token) is None and client.deletions.count() == 0
    [letter] = client.dead_letters.entries()

    retried = retry_dead_letter(client, letter)

    assert (retried.outcome, retried.upload_id) == (Outcome.REQUEUED, "gone-1")
    assert client.deletions.get(token) == request and client.deletions.count() == 1  # the sweeper's safety net
    assert sent_deletions(redis_conn) == [(deletion_token(request), "<delete gone-1>")]
    assert client.dead_letters.length() == 0
    assert client.status("gone-1") is None  # a deletion starts no upload run


def test_a_deletion_s_dead_letter_without_a_request_is_kept(client: Client) -> None:
    client.dead_letters.dead_letter(
        '{"upload": 3}',
        stage="delete",
        error_class="ValidationError",
        reason="invalid_event",
        message="bad",
        attempts=1,
    )
    [letter] = client.dead_letters.entries()

    retried = retry_dead_letter(client, letter)

    assert retried.outcome is Outcome.UNREADABLE and "not a delete request" in retried.detail
    assert client.dead_letters.length() == 1 and client.deletions.count() == 0


def test_dead_retry_sends_deletions_and_uploads_alike(
    client: Client, redis_conn: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    dead_upload(client, "u1")
    dead_deletion(client, DeleteRequest(upload_id="gone-2"))

    code, out, err = omnibind(["dead", "--retry"], redis_url, tmp_path)

    assert code == 0, err
    assert "u1  requeued" in out and "gone-2  requeued (deletion sent again)" in out and "requeued 2" in err
    assert sent_uploads(redis_conn) == ["u1"] and [r for _, r in sent_deletions(redis_conn)] == ["<delete gone-2>"]
    assert client.dead_letters.length() == 0
