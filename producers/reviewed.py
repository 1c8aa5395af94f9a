"""Human review decisions as a labelled set: each upload a moderator approved is a ``safe``
example, each one blocked a positive of the category it was blocked under (escalated ones
are undecided and left out). Its zero-shot scores are those its vector record keeps (the
automatic decision's, which a review does not change), so nothing is embedded again.

`omnibind calibrate --reviewed` draws precision/recall curves from them, and ``GET
/v1/review/accuracy`` (the console) the precision and recall of the policy's current
thresholds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from producers.client import Client
from shared.moderation.calibration import SAFE_LABEL, LabelledScores
from shared.moderation.review import ReviewAction, review_of
from shared.status import StatusRecord

PAGE = 500


def reviewed_records(client: Client, covers: Callable[[str | None], bool]) -> Iterator[tuple[StatusRecord, str]]:
    """Each reviewed (approved or blocked) upload of the recent index whose tenant `covers`
    accepts, with its label."""
    statuses = client.statuses
    position = None
    while True:
        ids = statuses.recent_ids_page(before=position, count=PAGE)
        for _, record in statuses.records_at(ids):
            review = review_of(record.extra)
            if review is None or review.action is ReviewAction.ESCALATE or not covers(record.tenant):
                continue
            label = SAFE_LABEL if review.action is ReviewAction.APPROVE else review.category
            if label:
                yield record, label
        if len(ids) < PAGE:
            return
        position = ids[-1]


def reviewed_examples(client: Client, covers: Callable[[str | None], bool]) -> list[LabelledScores]:
    """The labelled set of the reviewed uploads `covers` accepts (module docstring); an
    upload whose vector record is gone, or has no scores, is left out."""
    examples = []
    for record, label in reviewed_records(client, covers):
        vector = client.vectors.get(record.upload_id)
        if vector is not None and vector.moderation.scores:
            examples.append(LabelledScores(label, vector.modality, dict(vector.moderation.scores)))
    return examples
