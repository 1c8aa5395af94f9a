"""Human review decisions: a moderator approves, blocks or escalates an indexed upload.

A decision changes the upload's moderation state in three places, and `ReviewStore.apply`
writes the two Redis ones in one Lua script, so none can be seen without the others:

- the status record: ``flagged``, ``categories`` and ``x:review`` (the `HumanReview`);
- the decision log (``{prefix}:decisions``, source ``human``, with ``reviewer`` and the
  decision as it stands after the review), and the upload's index of its entries;
- the results stream: an entry of type ``moderation.decided`` that the webhook dispatcher
  delivers like an upload result (to targets that list ``decided`` in their statuses).

The vector record's `Moderation` (what search filters on) is updated by the caller before
(`producers.review`): a retry after a failure in between rewrites the same values.
The script refuses (returns 0) unless the record exists and is indexed: a decision about an
upload in flight would be overwritten by its run, and a failed upload has nothing to decide.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

import redis
from pydantic import Field

from shared.events import Band, Frozen, Moderation, Result, UploadStatus, utcnow
from shared.moderation.log import INDEX_LUA, PER_UPLOAD_MAX, decision_log_fields, flat_fields
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys

DECIDED_EVENT = "moderation.decided"
HUMAN_SOURCE = "human"
REVIEW_FIELD = "x:review"  # the status record's extra field `review` (shared.status.EXTRA_PREFIX)
MAX_NOTE_CHARS = 2000


class ReviewAction(StrEnum):
    APPROVE = "approve"  # not harmful: unflagged, allowed
    BLOCK = "block"  # harmful: flagged, blocked, listed in the blocklist under a category
    ESCALATE = "escalate"  # undecided: stays flagged in review, for someone with more context


class HumanReview(Frozen):
    """One moderator's decision about one upload."""

    action: ReviewAction
    by: str = Field(description="who decided: the API key id (or 'operator' for a static key)")
    at: datetime = Field(default_factory=utcnow)
    category: str | None = Field(None, description="for block: the category it is blocked (and listed) under")
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS)
    blocklist_entry: str | None = Field(None, description="for block: the blocklist entry it was added as")


def reviewed_moderation(previous: Moderation, review: HumanReview) -> Moderation:
    """The upload's moderation after `review` (pure): the automatic decision's scores and
    signals stay (they explain what the model saw); the outcome is the human's."""
    note = f"{review.action.value} by {review.by} at {review.at.isoformat(timespec='seconds')}"
    if review.note:
        note += f": {review.note}"
    notes = (*previous.notes, f"human review: {note}")
    if review.action is ReviewAction.APPROVE:
        return previous.model_copy(
            update={"flagged": False, "categories": (), "action": Band.ALLOW, "notes": notes, "decided_at": review.at}
        )
    if review.action is ReviewAction.BLOCK:
        category = review.category or (previous.categories[0] if previous.categories else None)
        categories = tuple(dict.fromkeys([*([category] if category else []), *previous.categories]))
        return previous.model_copy(
            update={
                "flagged": True,
                "categories": categories,
                "action": Band.BLOCK,
                "notes": notes,
                "decided_at": review.at,
            }
        )
    return previous.model_copy(update={"flagged": True, "action": Band.REVIEW, "notes": notes, "decided_at": review.at})


# KEYS: 1 status record, 2 decision log, 3 results stream, 4 the upload's decision index.
# ARGV: 1 review JSON, 2 flagged ("1"/"0"), 3 categories JSON, 4 decision-log maxlen,
#       5 results maxlen, 6 the decision-log fields as a JSON list, 7 the result document
#       without its status (the script adds the record's), 8 now (ISO-8601),
#       9 the index's TTL (ms, 0 = none), 10 the index's cap.
_APPLY_LUA = (
    INDEX_LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'indexed' then return 0 end
redis.call('HSET', KEYS[1], 'x:review', ARGV[1], 'flagged', ARGV[2], 'categories', ARGV[3], 'updated_at', ARGV[8])
local logged = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(cjson.decode(ARGV[6])))
index_decision(KEYS[4], logged, tonumber(ARGV[9]), tonumber(ARGV[10]))
local run = redis.call('HGET', KEYS[1], 'runs') or '1'
local tenant = redis.call('HGET', KEYS[1], 'tenant')
local doc = cjson.decode(ARGV[7])
local entry = {'v', '1', 'type', 'moderation.decided', 'upload_id', doc['upload_id'], 'status', status,
               'run', run, 'at', ARGV[8], 'flagged', ARGV[2] == '1' and 'true' or 'false',
               'categories', ARGV[3], 'review', ARGV[1], 'result', ARGV[7]}
if tenant then table.insert(entry, 'tenant'); table.insert(entry, tenant) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(entry))
return 1
"""
)


class ReviewStore:
    """Applies human decisions in Redis (module docstring). Raises `RedisUnavailable`."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "omnibind",
        *,
        decisions_maxlen: int = 50_000,
        results_maxlen: int = 100_000,
        index_ttl_s: float = 0.0,
    ) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self.decisions_maxlen = decisions_maxlen
        self.index_ttl_s = index_ttl_s
        self.results_maxlen = results_maxlen
        self._apply = client.register_script(_APPLY_LUA)

    def apply(self, upload_id: str, review: HumanReview, decision: Moderation, result: Result) -> bool:
        """Record `review` (with the `decision` it leads to) for `upload_id` and announce
        `result`. False (nothing written) unless the upload is indexed."""
        log_fields = decision_log_fields(upload_id, decision, source=HUMAN_SOURCE, reviewer=review.by)
        doc = result.model_copy(update={"status": UploadStatus.INDEXED}).model_dump_json()
        args: list[Any] = [
            review.model_dump_json(),
            "1" if decision.flagged else "0",
            json.dumps(list(decision.categories)),
            self.decisions_maxlen,
            self.results_maxlen,
            json.dumps(flat_fields(log_fields)),
            doc,
            review.at.isoformat().replace("+00:00", "Z"),
            int(self.index_ttl_s * 1000),
            PER_UPLOAD_MAX,
        ]
        keys = [
            self.keys.upload(upload_id),
            self.keys.decisions,
            self.keys.results,
            self.keys.upload_decisions(upload_id),
        ]
        with translate_redis_errors(f"recording the review of upload {upload_id}"):
            return bool(self._apply(keys=keys, args=args))


def review_of(extra: Mapping[str, Any]) -> HumanReview | None:
    """The human review kept in a status record's `extra`, if any."""
    raw = extra.get("review")
    return HumanReview.model_validate(raw) if isinstance(raw, dict) else None
