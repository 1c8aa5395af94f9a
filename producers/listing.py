"""Which status records a listing shows (pure): the filters of ``GET /v1/uploads`` and the
review queue, and the opaque cursor that continues a listing.

Listings walk the recent index (`StatusStore.recent_page`, newest submission first) and keep
the records that match; the caller's tenants are always one of the conditions, so a listing
never shows another tenant's upload. A cursor is the position of the last record examined
(not the last one shown), so a page that found few matches still moves on.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.events import Band, Modality, UploadStatus
from shared.moderation.review import ReviewAction, review_of
from shared.status import StatusRecord


class ReviewState(StrEnum):
    """Where an upload stands with the moderators."""

    PENDING = "pending"  # flagged or in the review band, no human decision yet (the queue)
    ESCALATED = "escalated"  # a moderator escalated it
    DECIDED = "decided"  # approved or blocked by a moderator
    NONE = "none"  # nothing to review: not flagged, allowed, and nobody decided


def band_of(record: StatusRecord) -> Band | None:
    """The automatic decision's action (allow | review | block), from the status record's
    moderation summary; None before moderation."""
    summary = record.extra.get("moderation")
    action = summary.get("action") if isinstance(summary, dict) else None
    return Band(action) if isinstance(action, str) and action in Band.__members__.values() else None


def review_state(record: StatusRecord) -> ReviewState:
    review = review_of(record.extra)
    if review is not None:
        return ReviewState.ESCALATED if review.action is ReviewAction.ESCALATE else ReviewState.DECIDED
    if record.status is UploadStatus.INDEXED and (record.flagged or band_of(record) in (Band.REVIEW, Band.BLOCK)):
        return ReviewState.PENDING
    return ReviewState.NONE


@dataclass(frozen=True, slots=True)
class UploadFilters:
    """Conjunctive conditions on a status record; None = any. `tenants` None = every tenant
    (operator keys only)."""

    tenants: frozenset[str] | None
    status: UploadStatus | None = None
    modality: Modality | None = None
    band: Band | None = None
    flagged: bool | None = None
    category: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    review: tuple[ReviewState, ...] | None = None

    def matches(self, record: StatusRecord) -> bool:
        if self.tenants is not None and record.tenant not in self.tenants:
            return False
        if self.status is not None and record.status is not self.status:
            return False
        if self.modality is not None and record.modality is not self.modality:
            return False
        if self.band is not None and band_of(record) is not self.band:
            return False
        if self.flagged is not None and bool(record.flagged) is not self.flagged:
            return False
        if self.category is not None and self.category not in record.categories:
            return False
        if self.source is not None and record.source != self.source:
            return False
        submitted = _utc(record.submitted_at or record.updated_at)
        if self.since is not None and submitted < _utc(self.since):
            return False
        if self.until is not None and submitted >= _utc(self.until):
            return False
        return self.review is None or review_state(record) in self.review


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def encode_cursor(position: tuple[int, str]) -> str:
    raw = f"{position[0]}|{position[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str] | None:
    """The position a cursor names, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, upload_id = raw.split("|", 1)
        return int(score), upload_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def page_of(
    rows: list[tuple[int, StatusRecord]], filters: UploadFilters, limit: int
) -> tuple[list[StatusRecord], tuple[int, str] | None]:
    """The matching records of `rows` (up to `limit`) and the position after the last row
    examined (None when `rows` is empty)."""
    shown: list[StatusRecord] = []
    last: tuple[int, str] | None = None
    for score, record in rows:
        last = (score, record.upload_id)
        if filters.matches(record):
            shown.append(record)
            if len(shown) >= limit:
                break
    return shown, last


def summary_of(record: StatusRecord) -> dict[str, Any]:
    """What a listing shows of one record beyond the record itself."""
    band = band_of(record)
    return {"band": band.value if band else None, "review_state": review_state(record).value}
