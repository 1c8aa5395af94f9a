"""One webhook delivery: POST, retry with exponential backoff, report the final outcome.

Retried: connection errors, timeouts, and HTTP 408, 425, 429 and 5xx (a ``Retry-After`` in
seconds is honoured up to the longest backoff). Final at once: 2xx (delivered) and every
other status (the receiver refused; redirects are not followed). Each attempt is signed
anew (`signing`), so a late retry is not mistaken for a replay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from producers.webhooks.signing import SIGNATURE_HEADER, sign
from producers.webhooks.targets import Delivery
from shared.backoff import full_jitter_s
from shared.config import WebhookSettings

USER_AGENT = "omnibind-webhooks/1"
RETRY_STATUSES = frozenset({408, 425, 429})
MAX_ERROR_CHARS = 500


class DeliveryInterrupted(Exception):
    """The dispatcher is stopping in the middle of a delivery: leave the result unacknowledged
    (it is delivered again after the restart)."""


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    delivered: bool
    attempts: int
    status_code: int | None
    last_error: str | None
    duration_ms: int


def is_retryable(status_code: int) -> bool:
    return status_code in RETRY_STATUSES or status_code >= 500


def backoff_s(attempt: int, base_s: float, max_s: float, retry_after_s: float | None = None) -> float:
    """Delay after failed attempt number `attempt` (1, 2, ...): full jitter over an
    exponentially growing window, or the receiver's ``Retry-After`` (capped at `max_s`)."""
    if retry_after_s is not None:
        return min(max_s, max(0.0, retry_after_s))
    return full_jitter_s(attempt, base_s, max_s)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.strip().isdigit() else None


class WebhookSender:
    """Delivers `Delivery`s over one pooled HTTP client (thread-safe)."""

    def __init__(
        self,
        settings: WebhookSettings,
        stop: threading.Event,
        *,
        http: httpx.Client | None = None,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._stop = stop
        self._http = http or httpx.Client(
            timeout=settings.timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.concurrency * 2),
        )
        self._clock_s = clock_s

    def close(self) -> None:
        self._http.close()

    def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        """POST `delivery` until it succeeds, is refused, or `max_attempts` are used up.

        Raises `DeliveryInterrupted` when the dispatcher stops while waiting to retry.
        """
        settings = self._settings
        started_s = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        for attempt in range(1, settings.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = self._post(delivery)
            except httpx.HTTPError as exc:
                status_code, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            else:
                status_code = response.status_code
                if response.is_success:
                    return DeliveryOutcome(True, attempt, status_code, None, _ms_since(started_s))
                error = f"HTTP {status_code}: {response.text}"[:MAX_ERROR_CHARS]
                if not is_retryable(status_code):
                    return DeliveryOutcome(False, attempt, status_code, error, _ms_since(started_s))
                retry_after = _retry_after_s(response)
            if attempt == settings.max_attempts:
                break
            if self._stop.wait(backoff_s(attempt, settings.backoff_s, settings.backoff_max_s, retry_after)):
                raise DeliveryInterrupted(delivery.delivery_id)
        return DeliveryOutcome(False, settings.max_attempts, status_code, error, _ms_since(started_s))

    def _post(self, delivery: Delivery) -> httpx.Response:
        timestamp_s = int(self._clock_s())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Omnibind-Delivery": delivery.delivery_id,
            "Omnibind-Event": delivery.event_type,
            SIGNATURE_HEADER: sign(delivery.target.secret.get_secret_value(), delivery.body, timestamp_s),
        }
        return self._http.post(delivery.target.url, content=delivery.body, headers=headers)


def _ms_since(started_s: float) -> int:
    return int((time.monotonic() - started_s) * 1000)
