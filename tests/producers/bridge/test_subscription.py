"""Subscribing a bucket to notifications, against the S3-compatible test server (it checks
ARNs the AWS way, so the tests use AWS-shaped ARNs; MinIO's look like
``arn:minio:sqs::OMNIBIND:redis``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from minio import Minio
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig

from producers.bridge import service
from producers.bridge.subscription import EVENTS, UnknownTarget, same_arn, subscribe_bucket, with_subscription
from shared.config import ObjectStoreSettings, Settings
from shared.errors import ConfigError
from tests.support.s3_server import S3Server

ARN = "arn:aws:sqs:us-east-1:123456789012:omnibind"
OTHER_ARN = "arn:aws:sqs:us-east-1:123456789012:audit"


def minio_of(server: S3Server) -> Minio:
    return Minio(server.endpoint, server.access_key, server.secret_key, secure=False, region=server.region)


def new_bucket(server: S3Server) -> str:
    bucket = f"sub-{uuid.uuid4().hex[:12]}"
    minio_of(server).make_bucket(bucket)
    return bucket


def test_a_bucket_is_subscribed_once_and_other_targets_are_kept(s3_server: S3Server) -> None:
    bucket = new_bucket(s3_server)
    other = QueueConfig(queue=OTHER_ARN, events=["s3:ObjectCreated:*"], config_id="audit")
    minio_of(s3_server).set_bucket_notification(bucket, NotificationConfig(queue_config_list=[other]))
    settings = ObjectStoreSettings(**s3_server.object_settings())

    assert subscribe_bucket(settings, bucket, ARN) is True
    assert subscribe_bucket(settings, bucket, ARN) is False, "already subscribed: nothing to change"

    queues = {q.queue: q.events for q in minio_of(s3_server).get_bucket_notification(bucket).queue_config_list}
    assert queues == {OTHER_ARN: ["s3:ObjectCreated:*"], ARN: list(EVENTS)}


def test_a_filtered_or_partial_entry_for_the_arn_is_completed_by_ours() -> None:
    partial = QueueConfig(queue=ARN, events=["s3:ObjectCreated:*"])
    filtered = QueueConfig(queue=ARN, events=list(EVENTS), prefix_filter_rule=PrefixFilterRule("images/"))
    for existing in (partial, filtered):
        updated = with_subscription(NotificationConfig(queue_config_list=[existing]), ARN)
        assert updated is not None and len(updated.queue_config_list) == 2


def test_a_refused_arn_is_a_config_error(s3_server: S3Server) -> None:
    settings = ObjectStoreSettings(**s3_server.object_settings())
    with pytest.raises(ConfigError, match="refused"):
        subscribe_bucket(settings, new_bucket(s3_server), "not-an-arn")


@pytest.mark.parametrize(
    ("stored", "configured", "same"),
    [
        ("arn:minio:sqs:eu-west-1:OMNIBIND:redis", "arn:minio:sqs::OMNIBIND:redis", True),
        ("arn:minio:sqs::OMNIBIND:redis", "arn:minio:sqs:eu-west-1:OMNIBIND:redis", True),
        ("arn:minio:sqs:eu-west-1:OMNIBIND:redis", "arn:minio:sqs:us-east-1:OMNIBIND:redis", False),
        ("arn:minio:sqs:eu-west-1:OMNIBIND:redis", "arn:minio:sqs::OTHER:redis", False),
        ("arn:minio:sqs::OMNIBIND:redis", "arn:minio:sqs::OMNIBIND:webhook", False),
        ("not-an-arn", "not-an-arn", True),
    ],
)
def test_an_arn_without_region_matches_the_same_target_in_any_region(stored: str, configured: str, same: bool) -> None:
    config = NotificationConfig(queue_config_list=[QueueConfig(queue=stored, events=list(EVENTS))])
    assert same_arn(stored, configured) is same
    assert (with_subscription(config, configured) is None) is same


MINIO_OBJECTS = {"backend": "minio", "endpoint": "127.0.0.1:9", "access_key": "k", "secret_key": "secret-key"}
MINIO_ARN = "arn:minio:sqs::OMNIBIND:redis"


def minio_knowing_the_target_from_ask(first: int | None, asks: list[str]) -> Callable[[Settings, str, str], None]:
    """A stand-in for one subscription round trip: MinIO answers "ARN does not exist" until
    ask number `first` (never when None); each ask is recorded in `asks`."""

    def subscribe_once(settings: Settings, bucket: str, arn: str) -> None:
        asks.append(arn)
        if first is None or len(asks) < first:
            raise UnknownTarget(f"MinIO has no notification target {arn}")

    return subscribe_once


def test_a_minio_that_loads_the_target_after_it_answers_is_asked_again_until_it_knows_it(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # MinIO answers requests before its background boot has loaded the notification targets
    # (cmd/server-main.go, initBucketTargets): the first asks meet "ARN does not exist".
    asks: list[str] = []
    monkeypatch.setattr(service, "_subscribe_once", minio_knowing_the_target_from_ask(3, asks))
    settings = make_settings(objects=MINIO_OBJECTS, bridge={"minio_notify_arn": MINIO_ARN})

    service.subscribe_configured_bucket(settings, threading.Event())

    assert asks == [MINIO_ARN] * 3


def test_a_stopping_bridge_does_not_wait_for_the_target(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    asks: list[str] = []
    monkeypatch.setattr(service, "_subscribe_once", minio_knowing_the_target_from_ask(None, asks))
    settings = make_settings(objects=MINIO_OBJECTS, bridge={"minio_notify_arn": MINIO_ARN, "minio_target_wait_s": 3600})
    stop = threading.Event()
    stop.set()

    with pytest.raises(UnknownTarget):
        service.subscribe_configured_bucket(settings, stop)
    assert asks == [MINIO_ARN], "stopping ends the wait at once"
