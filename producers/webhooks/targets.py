"""Which webhook target a result goes to, and the JSON body it receives (pure).

Targets are configured per upload source (``OMNIBIND_WEBHOOKS__TARGETS``); ``*`` catches
every source without its own target. The body::

    {"type": "upload.indexed", "delivery_id": "1738324800123-0", "source": "cms",
     "tenant": null, "run": 1,
     "result": {"upload_id": ..., "status": "indexed", "modality": "image", "object": {...},
                "flagged": false, "categories": [], "error_reason": null, "error": null,
                "at": "2025-01-31T12:00:00.123456Z"}}

``delivery_id`` is the results-stream entry id: the same on every retry and redelivery of
this result, so a receiver can drop duplicates. A human review of an indexed upload (the
console, ``POST /v1/uploads/{id}/decision``) is delivered as ``{"type": "moderation.decided",
..., "review": {"action", "by", "at", "category", "note"}}`` to targets whose ``statuses``
include ``decided``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.config import WebhookTarget
from shared.moderation.review import DECIDED_EVENT
from shared.streams import ResultEntry

CATCH_ALL = "*"
DECIDED = DECIDED_EVENT
PAYLOAD_VERSION = 1


@dataclass(frozen=True, slots=True)
class Delivery:
    """One result to POST to one target."""

    delivery_id: str
    target_name: str  # the source it was configured for, or "*"
    target: WebhookTarget
    event_type: str
    upload_id: str
    source: str | None
    body: bytes


def choose_target(targets: Mapping[str, WebhookTarget], source: str | None) -> tuple[str, WebhookTarget] | None:
    """The target of `source` (or the catch-all), with the name it is configured under."""
    for name in (source, CATCH_ALL):
        if name is not None and name in targets:
            return name, targets[name]
    return None


def event_type(entry: ResultEntry) -> str:
    """``upload.indexed``, ``upload.failed``, or ``moderation.decided`` (a human review)."""
    return entry.event_type or f"upload.{entry.result.status.value}"


def wanted_by(target: WebhookTarget, entry: ResultEntry) -> bool:
    """Whether `target` takes `entry`: its status, or ``decided`` for a human review."""
    wanted = "decided" if entry.event_type == DECIDED else entry.result.status.value
    return wanted in target.statuses


def payload(entry: ResultEntry, source: str | None, tenant: str | None) -> dict[str, Any]:
    result = entry.result
    doc: dict[str, Any] = {
        "type": event_type(entry),
        "version": PAYLOAD_VERSION,
        "delivery_id": entry.entry_id,
        "source": source,
        "tenant": tenant,
        "run": entry.run,
        "result": result.model_dump(mode="json"),
    }
    if entry.review is not None:  # moderation.decided: who decided what, when
        doc["review"] = entry.review
    return doc


def build_delivery(
    entry: ResultEntry, source: str | None, tenant: str | None, targets: Mapping[str, WebhookTarget]
) -> Delivery | None:
    """The delivery of `entry`, or None when no target wants it (no target for the source,
    or the target does not take this status)."""
    chosen = choose_target(targets, source)
    if chosen is None:
        return None
    name, target = chosen
    if not wanted_by(target, entry):
        return None
    doc = payload(entry, source, tenant)
    return Delivery(
        delivery_id=entry.entry_id,
        target_name=name,
        target=target,
        event_type=doc["type"],
        upload_id=entry.result.upload_id,
        source=source,
        body=json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
    )
