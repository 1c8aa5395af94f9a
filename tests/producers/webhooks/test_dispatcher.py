"""The dispatcher against a real redis-server (results written by the real status script) and
real HTTP receivers on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from producers.bridge.service import consumer_name
from producers.bridge.stream_group import StreamGroup
from producers.client import Client
from producers.webhooks.delivery_log import DeliveryLog
from producers.webhooks.dispatcher import DispatchTiming, WebhookDispatcher
from producers.webhooks.sender import WebhookSender
from producers.webhooks.signing import verify_signature
from shared.config import Settings
from shared.errors import CorruptMedia
from shared.events import Moderation, Result, Stage, UploadEvent, UploadStatus
from shared.moderation.review import HumanReview, ReviewAction, ReviewStore, reviewed_moderation
from tests.support.http_receiver import Receiver, running_receiver
from tests.support.waiting import wait_until

RESULTS = "omnibind:results"
GROUP = "omnibind-webhooks"


@pytest.fixture
def hook_settings(make_settings: Callable[..., Settings], redis_url: str) -> Callable[..., Settings]:
    def factory(targets: dict[str, Any], **webhooks: Any) -> Settings:
        options = {"targets": targets, "backoff_s": 0.01, "backoff_max_s": 0.05, "max_attempts": 3, **webhooks}
        return make_settings(redis_url=redis_url, webhooks=options)

    return factory


@contextmanager
def dispatcher(
    settings: Settings, client: Client, group_type: type[StreamGroup] = StreamGroup
) -> Iterator[tuple[WebhookDispatcher, threading.Event]]:
    stop = threading.Event()
    options = settings.webhooks
    group = group_type(client.redis, RESULTS, options.group, consumer_name(options.consumer))
    sender = WebhookSender(options, stop)
    log = DeliveryLog(client.redis, "omnibind:webhooks:deliveries")
    running = WebhookDispatcher(group, client.statuses, sender, log, options, DispatchTiming(block_ms=100))
    running.start()
    try:
        yield running, stop
    finally:
        stop.set()
        running.close()
        sender.close()


def finish(client: Client, upload_id: str, source: str, *, failed: bool = False) -> None:
    client.statuses.create(UploadEvent(id=upload_id, text="x", source=source, tenant="acme"))
    if failed:
        client.statuses.fail(upload_id, Stage.PREPROCESS, CorruptMedia("bad bytes"))
    else:
        client.statuses.advance(upload_id, UploadStatus.INDEXED, flagged=True, categories=["violence"])


def drain(running: WebhookDispatcher, log: DeliveryLog, expected_log_entries: int, timeout_s: float = 30) -> None:
    def logged() -> bool:
        if len(log.entries()) >= expected_log_entries:
            return True
        running.poll()  # waits for the next result or delivery: no sleep
        return False

    wait_until(
        logged,
        timeout_s=timeout_s,
        what=lambda: f"{expected_log_entries} deliveries logged (so far {len(log.entries())})",
        poll_s=0,
    )


def pending(conn: redis.Redis) -> int:
    return int(conn.xpending(RESULTS, GROUP)["pending"])  # type: ignore[index]


def test_results_reach_their_sources_targets_signed_and_logged(
    hook_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    with running_receiver([500]) as cms, running_receiver([400]) as other:
        settings = hook_settings(
            {
                "cms": {"url": cms.url, "secret": "cms-secret"},
                "*": {"url": other.url, "secret": "catch-all", "statuses": ["failed"]},
            }
        )
        with Client(settings) as client, dispatcher(settings, client) as (running, _stop):
            finish(client, "cms-1", "cms")
            finish(client, "shop-1", "shop", failed=True)
            finish(client, "shop-2", "shop")  # indexed: the catch-all only takes failures
            log = DeliveryLog(client.redis, "omnibind:webhooks:deliveries")
            drain(running, log, 2)
            running.poll()  # the result nobody wants was read with the others; nothing left

            cms_requests = cms.wait_for(2)
            (other_request,) = other.wait_for(1)
            records = {r.upload_id: r for r in log.entries()}

    assert [r.answered for r in cms_requests] == [500, 200], "a server error is retried"
    body = json.loads(cms_requests[1].body)
    assert body["type"] == "upload.indexed" and body["source"] == "cms" and body["tenant"] == "acme"
    assert body["result"]["flagged"] is True and body["result"]["categories"] == ["violence"]
    assert verify_signature(
        "cms-secret", cms_requests[1].headers["Omnibind-Signature"], cms_requests[1].body, now_s=time.time()
    )
    other_body = json.loads(other_request.body)
    assert other_body["type"] == "upload.failed" and other_body["result"]["error_reason"] == "corrupt_media"
    assert verify_signature(
        "catch-all", other_request.headers["Omnibind-Signature"], other_request.body, now_s=time.time()
    )

    assert set(records) == {"cms-1", "shop-1"}
    assert (records["cms-1"].outcome, records["cms-1"].attempts, records["cms-1"].status_code) == ("delivered", 2, 200)
    assert records["cms-1"].target == "cms" and records["cms-1"].url == cms.url
    assert (records["shop-1"].outcome, records["shop-1"].status_code, records["shop-1"].target) == ("failed", 400, "*")
    assert records["shop-1"].last_error is not None and "HTTP 400" in records["shop-1"].last_error
    assert pending(redis_conn) == 0, "every result acknowledged once its outcome was logged"


def retrying_settings(hook_settings: Callable[..., Settings], cms: Receiver) -> Settings:
    """One target, `cms`, whose failed deliveries are retried after 30 s."""
    return hook_settings({"cms": {"url": cms.url, "secret": "s"}}, consumer="hooks-1", backoff_s=30, backoff_max_s=30)


def stopped_after_a_failed_first_attempt(settings: Settings, client: Client, cms: Receiver) -> None:
    """cms-1's first delivery fails; the dispatcher is stopped while its retry waits (30 s),
    leaving the result pending."""
    with dispatcher(settings, client) as (running, stop):
        finish(client, "cms-1", "cms")
        running.poll()
        cms.wait_for(1)
        stop.set()


def test_a_dispatcher_stopped_mid_delivery_delivers_after_restart(
    hook_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    with running_receiver([503]) as cms:
        settings = retrying_settings(hook_settings, cms)
        with Client(settings) as client:
            stopped_after_a_failed_first_attempt(settings, client, cms)
            assert pending(redis_conn) == 1, "not acknowledged: its delivery never finished"

            with dispatcher(settings, client) as (restarted, _stop):
                drain(restarted, DeliveryLog(client.redis, "omnibind:webhooks:deliveries"), 1)

    assert [r.answered for r in cms.requests] == [503, 200]
    assert pending(redis_conn) == 0


class ReadOutlastingTheDelivery(StreamGroup):
    """Its pending entries come back only once the delivery in flight has ended: the race of a
    delivery finishing (acknowledged, then out of the dispatcher's books) while the dispatcher
    reads the entries still pending a moment before."""

    running: WebhookDispatcher | None = None

    def read_own_pending(self, count: int) -> list[Any]:
        entries = super().read_own_pending(count)
        running = self.running
        if running is not None and running._in_flight:  # (the race needs the dispatcher's own books)
            wait_until(lambda: not running._in_flight, timeout_s=30, what="the delivery in flight to end", poll_s=0.01)
        return entries


def test_a_delivery_that_ends_while_pending_entries_are_read_is_not_made_again(
    hook_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    with running_receiver([503]) as cms:
        settings = retrying_settings(hook_settings, cms)
        with Client(settings) as client:
            stopped_after_a_failed_first_attempt(settings, client, cms)  # read again by the next one
            with dispatcher(settings, client, ReadOutlastingTheDelivery) as (restarted, _stop):
                restarted._group.running = restarted  # type: ignore[attr-defined]
                drain(restarted, DeliveryLog(client.redis, "omnibind:webhooks:deliveries"), 1)
                restarted.poll()  # reads its pending entries while the delivery ends

    assert [r.answered for r in cms.requests] == [503, 200], "delivered once after the restart"
    assert pending(redis_conn) == 0


def test_results_before_the_group_existed_are_skipped_unless_asked_for(
    hook_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    with running_receiver() as cms:
        settings = hook_settings({"cms": {"url": cms.url, "secret": "s"}})
        with Client(settings) as client:
            finish(client, "old", "cms")
            with dispatcher(settings, client) as (running, _stop):
                finish(client, "new", "cms")
                drain(running, DeliveryLog(client.redis, "omnibind:webhooks:deliveries"), 1)
            assert [json.loads(r.body)["result"]["upload_id"] for r in cms.requests] == ["new"]

            history = settings.model_copy(
                update={"webhooks": settings.webhooks.model_copy(update={"group": "replay", "start_from": "all"})}
            )
            with dispatcher(history, client) as (replaying, _stop):
                drain(replaying, DeliveryLog(client.redis, "omnibind:webhooks:deliveries"), 3)
            assert sorted(json.loads(r.body)["result"]["upload_id"] for r in cms.requests[1:]) == ["new", "old"]


def test_a_human_decision_reaches_targets_that_take_decided_as_moderation_decided(
    hook_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    with running_receiver([]) as cms, running_receiver([]) as shop:
        settings = hook_settings(
            {
                "cms": {"url": cms.url, "secret": "cms-secret", "statuses": ["indexed", "decided"]},
                "shop": {"url": shop.url, "secret": "shop-secret"},  # default: indexed and failed only
            }
        )
        with Client(settings) as client, dispatcher(settings, client) as (running, _stop):
            finish(client, "cms-1", "cms")
            finish(client, "shop-1", "shop")
            store = ReviewStore(client.redis)
            for upload_id in ("cms-1", "shop-1"):
                review = HumanReview(action=ReviewAction.APPROVE, by="key-1")
                decision = reviewed_moderation(Moderation(flagged=True, categories=("violence",)), review)
                result = Result(upload_id=upload_id, status=UploadStatus.INDEXED, flagged=False)
                assert store.apply(upload_id, review, decision, result)
            log = DeliveryLog(client.redis, "omnibind:webhooks:deliveries")
            drain(running, log, 3)
            cms_requests = cms.wait_for(2)
            (shop_request,) = shop.wait_for(1)

    bodies = [json.loads(request.body) for request in cms_requests]
    assert [body["type"] for body in bodies] == ["upload.indexed", "moderation.decided"]
    decided = bodies[1]
    assert decided["result"]["upload_id"] == "cms-1" and decided["result"]["flagged"] is False
    assert decided["review"]["action"] == "approve" and decided["review"]["by"] == "key-1"
    assert decided["tenant"] == "acme" and decided["source"] == "cms"
    assert json.loads(shop_request.body)["type"] == "upload.indexed"
    assert pending(redis_conn) == 0
