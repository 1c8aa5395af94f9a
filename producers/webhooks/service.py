"""The `omnibind webhooks` process: the dispatcher built from settings, run until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from producers.bridge.runner import run_consumers
from producers.bridge.service import consumer_name, heartbeat
from producers.bridge.stream_group import StreamGroup
from producers.client import Client
from producers.webhooks.delivery_log import DeliveryLog
from producers.webhooks.dispatcher import WebhookDispatcher
from producers.webhooks.sender import WebhookSender
from shared.config import Settings
from shared.redis_keys import RedisKeys

log = logging.getLogger(__name__)

HEARTBEAT_KIND = "webhooks"
_IDLE_CHECK_S = 1.0


def run_webhooks(settings: Settings, stopping: Callable[[], bool]) -> None:
    """Deliver results until `stopping()` returns True. Without any target configured the
    process stays up idle (so a compose service can exist before it is configured) and
    consumes nothing."""
    options = settings.webhooks
    keys = RedisKeys(settings.queue_prefix)
    stop = threading.Event()
    with Client(settings, source="webhooks") as client, heartbeat(client, HEARTBEAT_KIND):
        if not options.targets:
            log.warning("no webhook targets configured (OMNIBIND_WEBHOOKS__TARGETS): nothing to deliver")
            while not stopping():
                stop.wait(_IDLE_CHECK_S)
            return
        group = StreamGroup(client.redis, keys.results, options.group, consumer_name(options.consumer))
        sender = WebhookSender(options, stop)
        delivery_log = DeliveryLog(client.redis, keys.webhook_deliveries, maxlen=options.log_maxlen)
        dispatcher = WebhookDispatcher(group, client.statuses, sender, delivery_log, options)
        log.info("delivering results to %d target(s): %s", len(options.targets), ", ".join(sorted(options.targets)))
        try:
            run_consumers([dispatcher], stopping, stop)
        finally:
            stop.set()
            dispatcher.close()
            sender.close()
