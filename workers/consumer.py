"""The worker's message consumer: Celery's, with every undecodable message dead-lettered.

Celery acks a message whose body cannot be decoded (bad JSON or msgpack, a content type
no worker accepts, nesting too deep for the JSON parser) after one CRITICAL log line: the
message vanished without a trace an operator could list. Here it also becomes a dead letter
(stage ``decode``, reason ``too_deep``, ``too_large`` or ``invalid_message``, its upload id
when its headers name one, the start of its body), then Celery acks it as before. Envelopes
kombu could not even parse reach this path too, quarantined by `shared.broker_transport`.

The upload a poison message names is not failed: the message may be forged or garbled while
the upload is fine, and a stalled upload is sent again by the stall sweeper.

Used by setting Celery's ``worker_consumer`` to ``workers.consumer:Consumer``
(`shared.queue.celery_config`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from shared.broker_envelopes import UNDECODABLE_HEADER
from shared.errors import OmnibindError
from shared.queue import UPLOAD_HEADER
from shared.streams import DeadLetterStream

log = logging.getLogger(__name__)

DEAD_LETTER_STAGE = "decode"
_KEPT_CHARS = 64 * 1024
_MESSAGE_CHARS = 500


def undecodable_reason(headers: dict[str, Any], exc: BaseException) -> tuple[str, str]:
    """(reason, message) of a message that could not be decoded with error `exc`."""
    quarantined = headers.get(UNDECODABLE_HEADER)
    if isinstance(quarantined, dict):
        return str(quarantined.get("reason", "invalid_message")), str(quarantined.get("message", ""))
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, RecursionError):
            return "too_deep", "message body nests too deeply to decode"
        cause = cause.__cause__ or cause.__context__
    return "invalid_message", f"undecodable message body: {type(exc).__name__}: {str(exc)[:_MESSAGE_CHARS]}"


def dead_letter_undecodable(dead_letters: DeadLetterStream, message: Any, exc: BaseException) -> str:
    """Write the dead letter of kombu `message`, which failed to decode with `exc`."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    reason, text = undecodable_reason(headers, exc)
    body = message.body if isinstance(message.body, bytes | str) else b""
    kept = body[:_KEPT_CHARS].decode(errors="replace") if isinstance(body, bytes) else body[:_KEPT_CHARS]
    upload_id = headers.get(UPLOAD_HEADER)
    task = headers.get("task")
    return dead_letters.dead_letter(
        kept,
        DEAD_LETTER_STAGE,
        "UndecodableMessage",
        reason,
        f"{task or 'message'} on {message.delivery_info.get('routing_key', '?')}: {text}",
        attempts=1,
        upload_id=upload_id if isinstance(upload_id, str) else None,
    )


class Consumer(CeleryConsumer):  # type: ignore[misc]  # celery ships no type hints
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        resources = getattr(self.app, "resources", None)
        if resources is not None:
            try:
                dead_letter_undecodable(resources.dead_letters, message, exc)
            except OmnibindError as record_error:  # Redis down: the log line below is all that is left
                log.error("cannot dead-letter an undecodable message: %s", record_error)
        super().on_decode_error(message, exc)
