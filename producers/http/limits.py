"""Request size limits, enforced before a body is read.

A request whose ``Content-Length`` is over the limit is answered 413 at once: not one byte
of its body is read (a client that sent ``Expect: 100-continue`` never sends it). A body
without a length (chunked) is counted as it streams in and refused with 413 as soon as it
passes the limit, so an over-size body is never held whole in memory or on disk.

Limits: multipart bodies (file uploads, search by file) may carry the largest upload the
pipeline accepts (``OMNIBIND_LIMITS__MAX_BYTES``) plus ``OMNIBIND_API__MULTIPART_OVERHEAD_BYTES``
for form fields and framing; every other body ``OMNIBIND_API__MAX_JSON_BYTES``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.http.errors import ApiError, ErrorBody
from shared.config import Settings

REASON = "request_too_large"


@dataclass(frozen=True)
class BodyLimits:
    multipart_bytes: int
    other_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            multipart_bytes=settings.limits.max_bytes + settings.api.multipart_overhead_bytes,
            other_bytes=settings.api.max_json_bytes,
        )

    def for_content_type(self, content_type: str) -> int:
        return self.multipart_bytes if content_type.lower().startswith("multipart/") else self.other_bytes


class RequestTooLarge(ApiError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, REASON, f"the request body is larger than {limit_bytes} bytes")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class BodySizeLimit:
    """ASGI middleware enforcing `BodyLimits` (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_content_type(_header(scope, b"content-type") or "")
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _send_too_large(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except RequestTooLarge:
            # Raised where nothing turned it into a response (a streaming read outside a
            # route); answer here unless a response is under way already.
            if started:
                raise
            await _send_too_large(send, limit)


async def _send_too_large(send: Send, limit_bytes: int) -> None:
    body = ErrorBody(reason=REASON, message=f"the request body is larger than {limit_bytes} bytes")
    payload = json.dumps(body.model_dump(mode="json")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
