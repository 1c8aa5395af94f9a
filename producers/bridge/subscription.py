"""Subscribing a bucket to MinIO notifications, so that compose needs no manual ``mc`` step.

Equivalent to ``mc event add ALIAS/BUCKET ARN --event put,delete``: the bucket's
notification configuration gets a queue entry for `arn` with ``s3:ObjectCreated:*`` and
``s3:ObjectRemoved:*``. Entries already there (other targets, other tools) are kept; an
entry for `arn` that already covers both events is left as it is.

MinIO stores an ARN with its server's region (``arn:minio:sqs:eu-west-1:OMNIBIND:redis``)
even when it was given without one (``arn:minio:sqs::OMNIBIND:redis``, as ``mc admin info``
prints it and compose configures it), so ARNs are compared with an empty region matching any
(`same_arn`): otherwise every start would add the entry again.
"""

from __future__ import annotations

import logging

import urllib3
from minio.error import MinioException, S3Error
from minio.notificationconfig import NotificationConfig, QueueConfig

from shared.config import ObjectStoreSettings
from shared.errors import ConfigError, StorageUnavailable
from shared.objects.minio import connect_minio

log = logging.getLogger(__name__)

EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
CONFIG_ID = "omnibind-bridge"
# arn:partition:service:region:account-or-id:resource (the resource may hold more colons).
_ARN_SPLITS = 4
_ARN_PARTS = _ARN_SPLITS + 1
_REGION = 3
_ACCESS_ERRORS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidArgument"}
# MinIO's answer for an ARN of no target it has loaded (S3 code InvalidArgument).
_UNKNOWN_ARN_MARK = "destination ARN does not exist"


class UnknownTarget(ConfigError):
    """MinIO has no notification target by that ARN, not yet or not at all: it loads its
    targets in the background after it starts answering requests."""

    reason = "unknown_notify_target"


def same_arn(first: str, second: str) -> bool:
    """Whether two ARNs name the same target, an empty region matching any region (pure)."""
    if first == second:
        return True
    one, other = first.split(":", _ARN_SPLITS), second.split(":", _ARN_SPLITS)
    if len(one) != _ARN_PARTS or len(other) != _ARN_PARTS:
        return False
    regions_match = not one[_REGION] or not other[_REGION] or one[_REGION] == other[_REGION]
    return regions_match and one[:_REGION] + one[_REGION + 1 :] == other[:_REGION] + other[_REGION + 1 :]


def with_subscription(config: NotificationConfig, arn: str) -> NotificationConfig | None:
    """`config` plus a queue entry sending created/removed events to `arn`, or None when an
    entry for `arn` (`same_arn`) without filters already covers them (pure)."""
    for queue in config.queue_config_list:
        unfiltered = queue.prefix_filter_rule is None and queue.suffix_filter_rule is None
        if queue.queue and same_arn(queue.queue, arn) and unfiltered and set(EVENTS) <= set(queue.events):
            return None
    ours = QueueConfig(queue=arn, events=list(EVENTS), config_id=CONFIG_ID)
    return NotificationConfig(
        cloud_func_config_list=list(config.cloud_func_config_list),
        queue_config_list=[*config.queue_config_list, ours],
        topic_config_list=list(config.topic_config_list),
    )


def subscribe_bucket(settings: ObjectStoreSettings, bucket: str, arn: str) -> bool:
    """Make `bucket` (which must exist) notify `arn`; True if the configuration changed.

    Raises `UnknownTarget` when MinIO has no target by that ARN, `ConfigError` when it refuses
    otherwise (credentials), `StorageUnavailable` when it cannot be reached.
    """
    http, client = connect_minio(settings)
    try:
        updated = with_subscription(client.get_bucket_notification(bucket), arn)
        if updated is not None:
            client.set_bucket_notification(bucket, updated)
    except S3Error as exc:
        if exc.code == "InvalidArgument" and _UNKNOWN_ARN_MARK in (exc.message or ""):
            raise UnknownTarget(
                f"MinIO has no notification target {arn} for bucket {bucket!r} ({exc.message}). Fix: enable the "
                "target on MinIO (MINIO_NOTIFY_REDIS_ENABLE_<ID>=on with its ADDRESS, KEY and FORMAT=access, as "
                "docker-compose.yml does) and set OMNIBIND_BRIDGE__MINIO_NOTIFY_ARN to an ARN `mc admin info "
                "--json` lists"
            ) from exc
        if exc.code in _ACCESS_ERRORS:
            raise ConfigError(f"MinIO refused the notification config of {bucket!r} for {arn}: {exc.message}") from exc
        raise StorageUnavailable(f"cannot subscribe bucket {bucket!r} to {arn}: {exc}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageUnavailable(f"cannot reach MinIO at {settings.endpoint}: {exc}") from exc
    finally:
        http.clear()
    if updated is not None:
        log.info("bucket %s now notifies %s of %s", bucket, arn, ", ".join(EVENTS))
    return updated is not None
