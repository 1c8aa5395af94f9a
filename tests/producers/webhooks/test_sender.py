"""Deliveries against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from producers.webhooks.sender import DeliveryInterrupted, WebhookSender, backoff_s
from producers.webhooks.signing import verify_signature
from producers.webhooks.targets import Delivery, build_delivery
from shared.config import WebhookSettings, WebhookTarget
from shared.events import Result, UploadStatus
from shared.streams import ResultEntry
from tests.support.http_receiver import running_receiver
from tests.support.s3_server import free_loopback_port

SECRET = "whsec-test"


def delivery_to(url: str, status: UploadStatus = UploadStatus.INDEXED) -> Delivery:
    entry = ResultEntry(entry_id="1738324800123-0", result=Result(upload_id="cat-42", status=status))
    target = WebhookTarget(url=url, secret=SECRET)  # type: ignore[arg-type]
    delivery = build_delivery(entry, "cms", "acme", {"cms": target})
    assert delivery is not None
    return delivery


@pytest.fixture
def sender() -> Iterator[WebhookSender]:
    settings = WebhookSettings(max_attempts=4, backoff_s=0.01, backoff_max_s=0.05, timeout_s=5)
    with_sender = WebhookSender(settings, threading.Event())
    yield with_sender
    with_sender.close()


def test_a_delivery_is_signed_json_the_receiver_can_verify(sender: WebhookSender) -> None:
    with running_receiver() as receiver:
        outcome = sender.deliver(delivery_to(receiver.url))
        (request,) = receiver.wait_for(1)

    assert outcome.delivered and outcome.attempts == 1 and outcome.status_code == 200
    assert request.path == "/hooks/omnibind"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Omnibind-Delivery"] == "1738324800123-0"
    assert request.headers["Omnibind-Event"] == "upload.indexed"
    assert verify_signature(SECRET, request.headers["Omnibind-Signature"], request.body, now_s=time.time())
    body: dict[str, Any] = json.loads(request.body)
    assert body["type"] == "upload.indexed" and body["source"] == "cms" and body["tenant"] == "acme"
    assert body["result"]["upload_id"] == "cat-42" and body["result"]["status"] == "indexed"


def test_server_errors_are_retried_until_delivered(sender: WebhookSender) -> None:
    with running_receiver([500, 503, 429]) as receiver:
        outcome = sender.deliver(delivery_to(receiver.url))
        requests = receiver.wait_for(4)

    assert outcome.delivered and outcome.attempts == 4
    assert [r.answered for r in requests] == [500, 503, 429, 200]
    assert len({r.headers["Omnibind-Delivery"] for r in requests}) == 1
    assert all(verify_signature(SECRET, r.headers["Omnibind-Signature"], r.body, now_s=time.time()) for r in requests)


def test_a_refusal_is_final_at_once(sender: WebhookSender) -> None:
    with running_receiver([400]) as receiver:
        outcome = sender.deliver(delivery_to(receiver.url))
        assert len(receiver.wait_for(1)) == 1

    assert not outcome.delivered and outcome.attempts == 1 and outcome.status_code == 400
    assert outcome.last_error is not None and outcome.last_error.startswith("HTTP 400")


def test_attempts_end_after_the_maximum_with_the_last_error(sender: WebhookSender) -> None:
    with running_receiver(default_status=502) as receiver:
        outcome = sender.deliver(delivery_to(receiver.url))
        assert len(receiver.requests) == 4

    assert not outcome.delivered and outcome.attempts == 4 and outcome.status_code == 502


def test_an_unreachable_receiver_is_retried_then_reported(sender: WebhookSender) -> None:
    outcome = sender.deliver(delivery_to(f"http://127.0.0.1:{free_loopback_port()}/hook"))

    assert not outcome.delivered and outcome.attempts == 4 and outcome.status_code is None
    assert outcome.last_error is not None and "Connect" in outcome.last_error


def test_stopping_during_a_backoff_interrupts_the_delivery() -> None:
    stop = threading.Event()
    sender = WebhookSender(WebhookSettings(max_attempts=5, backoff_s=30, backoff_max_s=30), stop)
    with running_receiver(default_status=500) as receiver:
        threading.Timer(0.2, stop.set).start()
        with pytest.raises(DeliveryInterrupted):
            sender.deliver(delivery_to(receiver.url))
    sender.close()


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    assert all(0 <= backoff_s(1, 1.0, 60.0) <= 1.0 for _ in range(50))
    assert all(0 <= backoff_s(20, 1.0, 60.0) <= 60.0 for _ in range(50))
    assert backoff_s(1, 1.0, 60.0, retry_after_s=7) == 7
    assert backoff_s(1, 1.0, 60.0, retry_after_s=3600) == 60.0


def test_results_are_not_taken_over_while_their_delivery_may_still_be_retrying() -> None:
    with pytest.raises(ValueError, match="slowest delivery"):
        WebhookSettings(max_attempts=10, timeout_s=30, backoff_max_s=120, reclaim_idle_s=900)
