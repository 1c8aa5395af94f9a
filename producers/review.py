"""A moderator's decision about one indexed upload, carried out (``POST
/v1/uploads/{id}/decision``, the console's approve / block / escalate).

In this order, each step safe to repeat:

1. block only: the upload is listed in the blocklist under the category, by its SHA-256 and
   its stored embedding (no re-embedding: the vector record holds both), so the same or a
   near copy uploaded again is flagged by the pipeline;
2. the vector record's moderation becomes the reviewed one (what search's ``flagged`` sees);
3. the status record, the decision log and the ``moderation.decided`` result event, in one
   step (`shared.moderation.review.ReviewStore`);
4. the audit log (`shared.audit`): who decided what, as for every person's decision.

A failure between the steps leaves a state the next attempt of the same decision completes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from producers.client import Client
from shared.audit import Action, AuditLog
from shared.errors import OmnibindError, PermanentError
from shared.events import Moderation, Result, UploadStatus
from shared.moderation.blocklist import Blocklist, BlocklistEntry, entry_id_for
from shared.moderation.policy import Policy
from shared.moderation.review import HUMAN_SOURCE, HumanReview, ReviewAction, ReviewStore, reviewed_moderation
from shared.status import StatusRecord
from shared.vectors.records import VectorRecord


class NotReviewable(OmnibindError):
    """The upload has no indexed record to decide about (in flight, failed, or deleted)."""

    reason = "not_indexed"


class UnknownCategory(PermanentError):
    reason = "unknown_category"


@dataclass(frozen=True)
class Decided:
    review: HumanReview
    moderation: Moderation


def review_store(client: Client) -> ReviewStore:
    settings = client.settings
    return ReviewStore(
        client.redis,
        settings.queue_prefix,
        decisions_maxlen=settings.moderation.decisions_maxlen,
        results_maxlen=settings.redis.results_maxlen,
        index_ttl_s=settings.redis.status_ttl_s,
    )


def block_category(review: HumanReview, previous: Moderation, policy: Policy) -> str:
    """The category a block is listed under: the one given, else the first that fired.
    Raises `UnknownCategory` for none, or one the policy does not have."""
    category = review.category or (previous.categories[0] if previous.categories else None)
    if category is None:
        raise UnknownCategory("name the category to block this upload under ('category')")
    if category not in policy.categories:
        raise UnknownCategory(f"unknown category {category!r}; the policy has: {', '.join(sorted(policy.categories))}")
    return category


def blocklist_entry(record: VectorRecord, category: str, review: HumanReview) -> BlocklistEntry | None:
    """The blocklist entry a block adds for `record` (None without a SHA-256 to match on)."""
    if not record.sha256:
        return None
    filename = record.object.key.rsplit("/", 1)[-1] if record.object is not None else None
    note = f"blocked in review of {record.upload_id} by {review.by}"
    return BlocklistEntry(
        id=entry_id_for(record.sha256, record.tenant),
        category=category,
        sha256=record.sha256,
        modality=record.modality,
        filename=filename,
        note=note + (f": {review.note}" if review.note else ""),
        model=record.model or None,
        checkpoint=record.checkpoint or None,
        # A block is the upload's tenant's decision: it flags copies in that tenant's uploads only.
        tenant=record.tenant,
    )


def decide(client: Client, status: StatusRecord, review: HumanReview, policy: Policy) -> Decided:
    """Carry out `review` of the upload of `status` (module docstring). Raises
    `NotReviewable` unless it is indexed, `UnknownCategory` for a block without a valid
    category; `TransientError`s from the stores (the decision may be repeated)."""
    if status.status is not UploadStatus.INDEXED:
        raise NotReviewable(f"upload {status.upload_id} is {status.status.value}: only indexed uploads are decided")
    record = client.vectors.get(status.upload_id)
    if record is None:
        raise NotReviewable(f"upload {status.upload_id} has no indexed record")
    if review.action is ReviewAction.BLOCK:
        category = block_category(review, record.moderation, policy)
        entry = blocklist_entry(record, category, review)
        if entry is not None:
            Blocklist(client.redis, client.settings.queue_prefix).add(
                entry, record.vector if entry.checkpoint else None, actor=review.by
            )
        review = review.model_copy(update={"category": category, "blocklist_entry": entry.id if entry else None})
    moderation = reviewed_moderation(record.moderation, review)
    client.vectors.upsert([dataclasses.replace(record, moderation=moderation)])
    result = Result(
        upload_id=status.upload_id,
        status=UploadStatus.INDEXED,
        modality=record.modality,
        object=record.object,
        flagged=moderation.flagged,
        categories=moderation.categories,
        at=review.at,
    )
    if not review_store(client).apply(status.upload_id, review, moderation, result):
        raise NotReviewable(f"upload {status.upload_id} is no longer indexed (run again or deleted)")
    AuditLog(client.redis, client.settings.queue_prefix).record(
        Action.MODERATION_DECISION,
        actor=review.by,
        target=status.upload_id,
        tenant=status.tenant,
        detail={
            "source": HUMAN_SOURCE,
            "action": moderation.action.value,
            "review": review.action.value,
            "flagged": moderation.flagged,
            "categories": list(moderation.categories),
        },
    )
    return Decided(review, moderation)
