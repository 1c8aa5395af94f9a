"""``GET /v1/uploads/{id}/explain`` (the decision in full, as ``omnibind explain`` says) and
``POST /v1/uploads/{id}/decision`` (a moderator's approve / block / escalate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from producers.http.auth import authorize
from producers.http.errors import ApiError, error_responses
from producers.http.lookup import find_upload, reviewer_of
from producers.http.state import ApiState, State
from producers.http.uploads import UploadId
from producers.review import NotReviewable, decide
from producers.reviewed import reviewed_examples
from shared.api_keys import KeyScope, Role
from shared.events import Frozen, Moderation
from shared.moderation.calibration import SAFE_LABEL, ThresholdStats, precision_recall
from shared.moderation.log import DecisionEntry, DecisionLog
from shared.moderation.policy import load_model_policy
from shared.moderation.review import MAX_NOTE_CHARS, HumanReview, ReviewAction, review_of

router = APIRouter(prefix="/v1", tags=["review"])

MAX_HISTORY = 100


class Explanation(Frozen):
    upload_id: str
    moderation: Moderation | None = Field(
        description="the decision the upload's vector record holds now (null: not indexed)"
    )
    review: HumanReview | None = Field(None, description="the human decision, once made")
    history: list[DecisionEntry] = Field(
        description="logged decisions of the upload, newest first: pipeline, rescore and human (with reviewer)"
    )


class DecisionRequest(BaseModel):
    """What a moderator decided."""

    model_config = ConfigDict(extra="forbid")

    action: ReviewAction = Field(description="approve (not harmful), block (harmful), escalate (undecided)")
    category: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="block: the category to block and blocklist it under (default: the first that fired)",
    )
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS, description="why (kept with the decision)")


class DecisionOutcome(Frozen):
    upload_id: str
    review: HumanReview
    moderation: Moderation = Field(description="the upload's moderation after the decision")


@router.get(
    "/uploads/{upload_id}/explain",
    response_model=Explanation,
    summary="Why an upload was (not) flagged",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
def explain(
    upload_id: UploadId,
    state: State,
    caller: Annotated[KeyScope, Depends(authorize(Role.READ))],
    history: Annotated[int, Query(ge=1, le=MAX_HISTORY, description="most logged decisions returned")] = 20,
) -> Explanation:
    """Every signal, threshold, band and margin of the upload's decision, the human review if
    any, and the decision log's entries for it (as ``omnibind explain --history``)."""
    status = find_upload(state, caller, upload_id)
    record = state.client.vectors.get(status.upload_id)
    settings = state.settings
    log = DecisionLog.from_settings(state.client.redis, settings)
    return Explanation(
        upload_id=status.upload_id,
        moderation=record.moderation if record is not None else None,
        review=review_of(status.extra),
        history=log.newest(limit=history, upload_id=status.upload_id),
    )


@router.post(
    "/uploads/{upload_id}/decision",
    response_model=DecisionOutcome,
    summary="Approve, block or escalate an upload",
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 500, 503),
)
async def post_decision(
    upload_id: UploadId,
    body: DecisionRequest,
    state: State,
    caller: Annotated[KeyScope, Depends(authorize(Role.MODERATE))],
) -> DecisionOutcome:
    """A moderator's decision about an indexed upload: written to the decision log with who
    (the key id) and when, applied to the upload's moderation state (status record and
    vector record, so search's `flagged` follows), and announced as a ``moderation.decided``
    result event (webhook targets with ``decided`` in their statuses receive it). ``block``
    also lists the upload in the blocklist under the category, so copies are flagged on
    arrival. 409 ``not_indexed`` for an upload in flight or failed."""
    return await run_in_threadpool(_decide, state, caller, upload_id, body)


def policy_path(state: ApiState, tenant: str | None) -> Path | None:
    """The policy file of `tenant` (OMNIBIND_MODERATION__TENANT_POLICIES), else the default's:
    a block's category must be one of the policy that moderates the upload."""
    moderation = state.settings.moderation
    return moderation.tenant_policies.get(tenant, moderation.policy) if tenant is not None else moderation.policy


def _decide(state: ApiState, caller: KeyScope, upload_id: str, body: DecisionRequest) -> DecisionOutcome:
    status = find_upload(state, caller, upload_id)
    review = HumanReview(action=body.action, by=reviewer_of(caller), category=body.category, note=body.note)
    try:
        decided = decide(
            state.client,
            status,
            review,
            load_model_policy(policy_path(state, status.tenant), state.settings.model.name),
        )
    except NotReviewable as exc:
        raise ApiError(409, exc.reason, exc.message) from exc
    return DecisionOutcome(upload_id=status.upload_id, review=decided.review, moderation=decided.moderation)


class ThresholdAccuracy(Frozen):
    threshold: float
    precision: float | None = Field(description="of the uploads at or over it, the share moderators blocked in it")
    recall: float | None = Field(description="of the uploads blocked in the category, the share at or over it")


class CategoryAccuracy(Frozen):
    category: str
    modality: str
    positives: int = Field(description="reviewed uploads blocked in this category")
    negatives: int = Field(description="other reviewed uploads of the modality (approved, or blocked in another)")
    review: ThresholdAccuracy = Field(description="at the policy's review threshold")
    block: ThresholdAccuracy = Field(description="at the policy's block threshold")


class Accuracy(Frozen):
    reviewed: int = Field(description="approved or blocked uploads the numbers come from")
    categories: list[CategoryAccuracy]


@router.get(
    "/review/accuracy",
    response_model=Accuracy,
    summary="Precision and recall from moderators' decisions",
    responses=error_responses(401, 403, 500, 503),
)
async def accuracy(state: State, caller: Annotated[KeyScope, Depends(authorize(Role.MODERATE))]) -> Accuracy:
    """Per category and modality, the precision and recall of the policy's current review
    and block thresholds on the zero-shot scores, with the key's reviewed uploads as the
    labels: approved = safe, blocked = positive of its category (escalated ones left out).
    The same labelled set `omnibind calibrate --reviewed` uses."""
    return await run_in_threadpool(_accuracy, state, caller)


def _accuracy(state: ApiState, caller: KeyScope) -> Accuracy:
    examples = reviewed_examples(state.client, caller.covers)
    policy = load_model_policy(policy_path(state, caller.single_tenant), state.settings.model.name)
    rows = []
    for category in sorted({e.label for e in examples} - {SAFE_LABEL}):
        if category not in policy.categories:
            continue
        for modality in sorted({e.modality for e in examples}, key=lambda m: m.value):
            current = policy.categories[category].thresholds_for(modality)
            curves = [
                c
                for c in precision_recall(examples, (current.review, current.block))
                if c.category == category and c.modality is modality
            ]
            if not curves:
                continue
            curve = curves[0]
            points = {p.threshold: p for p in curve.points}
            rows.append(
                CategoryAccuracy(
                    category=category,
                    modality=modality.value,
                    positives=curve.positives,
                    negatives=curve.negatives,
                    review=_at(points[current.review]),
                    block=_at(points[current.block]),
                )
            )
    return Accuracy(reviewed=len(examples), categories=rows)


def _at(point: ThresholdStats) -> ThresholdAccuracy:
    return ThresholdAccuracy(threshold=point.threshold, precision=point.precision, recall=point.recall)
