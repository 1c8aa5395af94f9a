"""The delivery log ``{prefix}:webhooks:deliveries``: one entry per finished delivery.

Fields (all strings): ``v`` (1), ``delivery_id`` (the results-stream entry id),
``upload_id``, ``source``, ``target`` (the source name the target is configured under, or
``*``), ``url`` (scheme, host and path only: a token in the query or user info is never
logged), ``outcome`` (``delivered`` | ``failed``), ``status_code`` (last HTTP status, empty
when none was received), ``attempts``, ``last_error`` (empty when delivered),
``duration_ms``, ``at`` (ISO-8601 UTC). Capped at about ``OMNIBIND_WEBHOOKS__LOG_MAXLEN``.
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from typing import Any, Literal

import redis

from producers.webhooks.sender import DeliveryOutcome
from producers.webhooks.targets import Delivery
from shared.events import Frozen, utcnow
from shared.redis_client import translate_redis_errors

LOG_VERSION = "1"


class DeliveryRecord(Frozen):
    entry_id: str
    delivery_id: str
    upload_id: str
    source: str | None
    target: str
    url: str
    outcome: Literal["delivered", "failed"]
    status_code: int | None
    attempts: int
    last_error: str | None
    duration_ms: int
    at: datetime


def loggable_url(url: str) -> str:
    """`url` without user info, query and fragment (where webhook tokens tend to live)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_record(entry_id: str | bytes, fields: dict[Any, Any]) -> DeliveryRecord:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    return DeliveryRecord(
        entry_id=_text(entry_id),
        delivery_id=decoded["delivery_id"],
        upload_id=decoded["upload_id"],
        source=decoded.get("source") or None,
        target=decoded["target"],
        url=decoded["url"],
        outcome=decoded["outcome"],  # type: ignore[arg-type]  # validated by pydantic
        status_code=int(decoded["status_code"]) if decoded.get("status_code") else None,
        attempts=int(decoded["attempts"]),
        last_error=decoded.get("last_error") or None,
        duration_ms=int(decoded.get("duration_ms", "0")),
        at=decoded["at"],  # type: ignore[arg-type]  # pydantic parses the ISO string
    )


class DeliveryLog:
    def __init__(self, client: redis.Redis, key: str, *, maxlen: int = 100_000) -> None:
        self._redis = client
        self.key = key
        self.maxlen = maxlen

    def record(self, delivery: Delivery, outcome: DeliveryOutcome) -> str:
        """Append the final outcome of `delivery`; returns the log entry id."""
        fields = {
            "v": LOG_VERSION,
            "delivery_id": delivery.delivery_id,
            "upload_id": delivery.upload_id,
            "source": delivery.source or "",
            "target": delivery.target_name,
            "url": loggable_url(delivery.target.url),
            "outcome": "delivered" if outcome.delivered else "failed",
            "status_code": "" if outcome.status_code is None else str(outcome.status_code),
            "attempts": str(outcome.attempts),
            "last_error": outcome.last_error or "",
            "duration_ms": str(outcome.duration_ms),
            "at": utcnow().isoformat().replace("+00:00", "Z"),
        }
        with translate_redis_errors("writing the webhook delivery log"):
            entry_id = self._redis.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return _text(entry_id)

    def entries(self, count: int = 100) -> list[DeliveryRecord]:
        """Up to `count` records, oldest first."""
        with translate_redis_errors("reading the webhook delivery log"):
            raw: Any = self._redis.xrange(self.key, count=count)
        return [parse_record(entry_id, fields) for entry_id, fields in raw]
