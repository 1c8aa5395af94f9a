"""The append-only decision log: a Redis stream ``{prefix}:decisions``, one entry per
moderation decision (the pipeline's, every ``omnibind rescore``'s, and every human review's:
`shared.moderation.review`).

Entry fields (all strings): ``v`` (format, "1"), ``upload_id``, ``source`` (pipeline |
rescore | human), ``flagged`` ("1"/"0"), ``action`` (allow | review | block),
``categories`` (JSON list), ``policy_version``, ``reviewer`` (source human only: who
decided, ``key:<id>``), ``decision`` (the whole `shared.events.Moderation` as JSON: every
score, signal, threshold, band, margin, note, the policy version and the model and
checkpoint). Entries are never rewritten; a redelivered stage may log the same decision
twice (at-least-once). The stream is capped at ~``OMNIBIND_MODERATION__DECISIONS_MAXLEN``
entries: to keep decisions for longer (appeals months later), read it with a consumer
group into durable storage. ``omnibind flagged`` and ``omnibind explain ID`` read it.

A decision a person makes (a moderator's, through the console or ``POST
/v1/uploads/{id}/decision``: `shared.moderation.review`, or `DecisionLog.append` with an
``actor``) is recorded in the audit log too (`shared.audit`); the pipeline's and a
rescore's decisions are not (a rescore is audited once per run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import redis

from shared.audit import Action, AuditLog, AuditSink
from shared.events import Frozen, Moderation
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.tenancy import tenant_of_id

DECISION_LOG_VERSION = "1"
_SCAN_PAGE = 500


class DecisionEntry(Frozen):
    entry_id: str
    upload_id: str
    source: str
    decision: Moderation
    reviewer: str | None = None  # who decided, for source "human" (a console or API review)


def decision_log_fields(
    upload_id: str, decision: Moderation, *, source: str = "pipeline", reviewer: str | None = None
) -> dict[str, str]:
    """The fields of one decision-log entry (pure; `shared.moderation.review` writes them
    from a script)."""
    fields = {
        "v": DECISION_LOG_VERSION,
        "upload_id": upload_id,
        "source": source,
        "flagged": "1" if decision.flagged else "0",
        "action": decision.action.value,
        "categories": json.dumps(list(decision.categories)),
        "policy_version": decision.policy_version or "",
        "decision": decision.model_dump_json(),
    }
    if reviewer is not None:
        fields["reviewer"] = reviewer
    return fields


class DecisionLog:
    def __init__(
        self, client: redis.Redis, prefix: str = "omnibind", *, maxlen: int = 50_000, audit: AuditSink | None = None
    ) -> None:
        self._redis = client
        self.key = RedisKeys(prefix).decisions
        self.maxlen = maxlen
        self._audit = audit or AuditLog(client, prefix)

    def append(
        self,
        upload_id: str,
        decision: Moderation,
        *,
        source: str = "pipeline",
        actor: str | None = None,
        tenant: str | None = None,
    ) -> str:
        """Add one decision; returns the entry id. With `actor` (a person's decision) it is
        audited too, under `tenant` (default: the tenant of the upload id's namespace)."""
        fields = decision_log_fields(upload_id, decision, source=source)
        with translate_redis_errors("appending to the decision log"):
            entry_id: Any = self._redis.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        if actor is not None:
            self._audit.record(
                Action.MODERATION_DECISION,
                actor=actor,
                target=upload_id,
                tenant=tenant or tenant_of_id(upload_id),
                detail={
                    "source": source,
                    "action": decision.action.value,
                    "flagged": decision.flagged,
                    "categories": list(decision.categories),
                    "decision_entry": entry,
                },
            )
        return entry

    def newest(
        self, *, limit: int = 20, flagged_only: bool = False, upload_id: str | None = None
    ) -> list[DecisionEntry]:
        """Up to `limit` entries, newest first, optionally only flagged ones or one upload's.
        Scans backwards through the whole retained log at most."""
        found: list[DecisionEntry] = []
        for entry_id, fields in self._backwards():
            if flagged_only and fields.get("flagged") != "1":
                continue
            if upload_id is not None and fields.get("upload_id") != upload_id:
                continue
            found.append(_parse(entry_id, fields))
            if len(found) >= limit:
                break
        return found

    def length(self) -> int:
        with translate_redis_errors("reading the decision log"):
            return int(self._redis.xlen(self.key))

    def _backwards(self) -> Iterator[tuple[str, dict[str, str]]]:
        upper = "+"
        while True:
            with translate_redis_errors("reading the decision log"):
                page: Any = self._redis.xrevrange(self.key, max=upper, count=_SCAN_PAGE)
            if not page:
                return
            yield from page
            last_id: str = page[-1][0]
            if len(page) < _SCAN_PAGE:
                return
            upper = "(" + last_id


def _parse(entry_id: str, fields: dict[str, str]) -> DecisionEntry:
    return DecisionEntry(
        entry_id=entry_id,
        upload_id=fields["upload_id"],
        source=fields.get("source", "pipeline"),
        reviewer=fields.get("reviewer"),
        decision=Moderation.model_validate_json(fields["decision"]),
    )
