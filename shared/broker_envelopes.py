"""Checking kombu message envelopes before kombu parses them.

kombu's Redis transport BRPOPs a message (a JSON envelope: ``body``, ``headers``,
``properties``...) and parses it in the worker's main process, outside any of Celery's error
handling: an envelope that is not JSON, not shaped like one, or nested deeply enough for
``RecursionError`` (100,000 brackets) stops the worker ("Unrecoverable error"), and the
popped message is lost. Here each popped envelope is checked first (size, nesting depth by
a scan of the raw bytes, shape); one that fails is swapped for a well-formed envelope that
carries its bytes (cut to `MAX_ENVELOPE_BYTES`) under the content type `UNDECODABLE_TYPE`,
which no worker accepts, with the reason in the header `UNDECODABLE_HEADER`. Celery then
hands it to ``on_decode_error`` like any message whose body cannot be decoded, where the
worker records it as a dead letter (`workers.consumer`).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from shared.errors import LimitExceeded, PermanentError
from shared.json_limits import loads_bounded

UNDECODABLE_TYPE = "application/x-omnibind-undecodable"
UNDECODABLE_HEADER = "omnibind_undecodable"
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024
"""Largest envelope accepted: a task message carries at most one upload's model-ready arrays
(an audio clip's mel frames, a 3×224×224 image: a few MB once base64-encoded)."""
MAX_ENVELOPE_DEPTH = 16
"""Deepest nesting of an envelope (kombu's own nests 3 levels: ``properties.delivery_info``)."""
_KEPT_BYTES = 64 * 1024  # what a quarantined envelope keeps of the original, for the dead letter


def envelope_problem(raw: bytes) -> PermanentError | None:
    """Why kombu could not deliver the envelope `raw`, or None when it can."""
    try:
        envelope = loads_bounded(raw, max_bytes=MAX_ENVELOPE_BYTES, max_depth=MAX_ENVELOPE_DEPTH, what="message")
    except LimitExceeded as exc:  # too_large, too_deep
        return exc
    except PermanentError as exc:  # not UTF-8, not JSON
        return PermanentError(exc.message, reason="invalid_message")
    shape = _shape_problem(envelope)
    return PermanentError(f"message envelope {shape}", reason="invalid_message") if shape else None


def _shape_problem(envelope: Any) -> str | None:
    """What kombu's ``Message`` would trip over: the fields it reads without checking."""
    if not isinstance(envelope, dict):
        return f"is a JSON {type(envelope).__name__}, not an object"
    properties = envelope.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        return "has no properties.delivery_tag"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return "has a properties.delivery_info that is not an object"
    if not isinstance(envelope.get("headers") or {}, dict):
        return "has headers that are not an object"
    body = envelope.get("body")
    if body is not None and not isinstance(body, str):
        return "has a body that is not a string"
    if body and properties.get("body_encoding") == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "has a body that is not valid base64"
    return None


def quarantine(raw: bytes, queue: str, problem: PermanentError) -> bytes:
    """A well-formed envelope for the undeliverable `raw` popped from `queue`: its body is
    the start of `raw`, its header `UNDECODABLE_HEADER` says why."""
    tag = str(uuid.uuid4())
    envelope = {
        "body": base64.b64encode(raw[:_KEPT_BYTES]).decode(),
        "content-encoding": "binary",
        "content-type": UNDECODABLE_TYPE,
        "headers": {
            UNDECODABLE_HEADER: {"reason": problem.reason, "message": problem.message, "bytes": len(raw)},
        },
        "properties": {
            "delivery_tag": tag,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "body_encoding": "base64",
            "priority": 0,
            "delivery_mode": 2,
        },
    }
    return json.dumps(envelope).encode()


def checked_pop(reply: Any, **_: Any) -> tuple[Any, Any] | None:
    """BRPOP's reply (``[queue key, envelope]`` or None) with an undeliverable envelope
    swapped for its `quarantine` envelope."""
    if not reply:
        return None
    key, raw = reply
    data = raw if isinstance(raw, bytes) else str(raw).encode(errors="surrogateescape")
    problem = envelope_problem(data)
    if problem is None:
        return key, raw
    queue = (key.decode(errors="replace") if isinstance(key, bytes) else str(key)).rpartition(":")[2]
    return key, quarantine(data, queue, problem)
