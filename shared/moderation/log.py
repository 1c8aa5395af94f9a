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

Each upload's entries are also indexed: ``{prefix}:decisions:upload:<id>`` lists its entry
ids, newest first (at most `PER_UPLOAD_MAX`), pushed by the same Lua script that adds the
entry (`DecisionLog.append`, and `shared.moderation.review` for a person's), so explaining
one upload reads its own entries (O(its decisions)) instead of scanning the whole log. An
id whose entry the cap trimmed away is skipped on reading. The index expires with the
upload's status record (``OMNIBIND_REDIS__STATUS_TTL_S``, renewed by each decision), and is
removed when the upload is deleted (`DecisionLog.forget`) or its tenant purged.

A decision a person makes (a moderator's, through the console or ``POST
/v1/uploads/{id}/decision``: `shared.moderation.review`, or `DecisionLog.append` with an
``actor``) is recorded in the audit log too (`shared.audit`); the pipeline's and a
rescore's decisions are not (a rescore is audited once per run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import redis

from shared.audit import Action, AuditLog, AuditSink
from shared.events import Frozen, Moderation
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.tenancy import tenant_of_id

if TYPE_CHECKING:
    from shared.config import Settings

DECISION_LOG_VERSION = "1"
_SCAN_PAGE = 500
_INDEX_PAGE = 50
PER_UPLOAD_MAX = 1000  # entry ids kept in one upload's index (a rescore a day: years)

# Appends one entry and indexes it under its upload, in one step (module docstring).
# KEYS: 1 the decision log, 2 the upload's index. ARGV: 1 maxlen, 2 index TTL (ms, 0 = none),
# 3 index cap, 4 the entry's fields as a JSON list. The review script does the same inline
# (`INDEX_LUA` is shared by both).
INDEX_LUA = """
local function index_decision(index_key, entry_id, ttl_ms, cap)
  redis.call('LPUSH', index_key, entry_id)
  redis.call('LTRIM', index_key, 0, cap - 1)
  if ttl_ms > 0 then redis.call('PEXPIRE', index_key, ttl_ms) end
end
"""
_APPEND_LUA = (
    INDEX_LUA
    + """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(cjson.decode(ARGV[4])))
index_decision(KEYS[2], id, tonumber(ARGV[2]), tonumber(ARGV[3]))
return id
"""
)


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


def flat_fields(fields: dict[str, str]) -> list[str]:
    """``{"a": "1", "b": "2"}`` -> ``["a", "1", "b", "2"]`` (XADD's arguments in a script)."""
    return [item for pair in fields.items() for item in pair]


class DecisionLog:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "omnibind",
        *,
        maxlen: int = 50_000,
        index_ttl_s: float = 0.0,
        audit: AuditSink | None = None,
    ) -> None:
        self._redis = client
        self._keys = RedisKeys(prefix)
        self.key = self._keys.decisions
        self.maxlen = maxlen
        self.index_ttl_s = index_ttl_s  # 0 = the per-upload index never expires
        self._audit = audit or AuditLog(client, prefix)
        self._append = client.register_script(_APPEND_LUA)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> DecisionLog:
        """The deployment's log: its cap, and per-upload indexes that live as long as the
        uploads' status records."""
        return cls(
            client,
            settings.queue_prefix,
            maxlen=settings.moderation.decisions_maxlen,
            index_ttl_s=settings.redis.status_ttl_s,
        )

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
        args: list[str | int] = [
            self.maxlen,
            int(self.index_ttl_s * 1000),
            PER_UPLOAD_MAX,
            json.dumps(flat_fields(fields)),
        ]
        with translate_redis_errors("appending to the decision log"):
            entry_id: Any = self._append(keys=[self.key, self._keys.upload_decisions(upload_id)], args=args)
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
        One upload's come from its index (reads only its entries); otherwise this scans
        backwards through the whole retained log at most."""
        found: list[DecisionEntry] = []
        entries = self._of_upload(upload_id) if upload_id is not None else self._backwards()
        for entry_id, fields in entries:
            if flagged_only and fields.get("flagged") != "1":
                continue
            if upload_id is not None and fields.get("upload_id") != upload_id:
                continue
            found.append(_parse(entry_id, fields))
            if len(found) >= limit:
                break
        return found

    def forget(self, upload_id: str) -> None:
        """Drop the upload's index (its upload was deleted). The entries stay in the
        append-only log until trimmed, or until its tenant is purged."""
        with translate_redis_errors("forgetting an upload's decisions"):
            self._redis.delete(self._keys.upload_decisions(upload_id))

    def _of_upload(self, upload_id: str) -> Iterator[tuple[str, dict[str, str]]]:
        """The upload's entries, newest first, a page of ids at a time; ids whose entry is
        gone from the log (trimmed, purged) are skipped."""
        index = self._keys.upload_decisions(upload_id)
        start = 0
        while True:
            with translate_redis_errors("reading the decision log"):
                ids: Any = self._redis.lrange(index, start, start + _INDEX_PAGE - 1)
                if not ids:
                    return
                pipe = self._redis.pipeline(transaction=False)
                for entry_id in ids:
                    pipe.xrange(self.key, min=entry_id, max=entry_id, count=1)
                pages: Any = pipe.execute()
            for page in pages:
                yield from page
            if len(ids) < _INDEX_PAGE:
                return
            start += _INDEX_PAGE

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
