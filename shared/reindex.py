"""Re-embedding stored uploads with another model (`omnibind reindex --model NAME`): the
torch-free half — where the new vectors go, in which order, and the progress kept in Redis.

Vectors of two models never share an index (`shared.vectors.model_guard`), so a reindex
writes into an index of its own, named from the model: LanceDB table
``{OMNIBIND_VECTORS__TABLE}__{model}`` (``uploads__pe_av_base``), Weaviate collection
``{OMNIBIND_VECTORS__COLLECTION}_{Model}`` (``OmnibindUpload_PeAvBase``). The source index is
only read; the operator cuts over by pointing every process at the new index and model
(docs/operations.md, "Switching models"), and rolls back by pointing them back.

Uploads are taken in one fixed order, (tenant, upload id), so a cursor — the last upload
finished — is enough to resume after a crash; records are written by upload id (the record
uuid is derived from it), so an upload done twice (a crash between its write and the cursor
save) is overwritten, not duplicated. State per (target index, tenant scope) in Redis:

- ``{prefix}:reindex:{target}:{scope}`` hash: ``cursor`` (JSON [tenant, id]), ``model``,
  ``checkpoint``, ``source``, ``total``, ``embedded``, ``skipped``, ``failed``,
  ``status`` (running | complete), ``started_at``, ``updated_at``;
- ``{prefix}:reindex:{target}:{scope}:failed`` hash: upload id -> JSON {reason, error, at}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from shared.config import Settings
from shared.events import Modality, UploadEvent, utcnow
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.vectors.records import VectorRecord

ALL_SCOPE = "*"  # the scope of a reindex of every tenant (and records without one)
SortKey = tuple[str, str]  # (tenant or "", upload id)


def _words(model: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", model.lower()) if word]


def target_index(settings: Settings, model: str) -> str:
    """The table (LanceDB) or collection (Weaviate) that `model`'s vectors are re-embedded
    into, named from the configured index and the model: ``uploads__pe_av_tiny``,
    ``OmnibindUpload_PeAvTiny``."""
    words = _words(model)
    if settings.vectors.backend == "weaviate":
        return f"{settings.vectors.collection}_{''.join(word.capitalize() for word in words)}"
    return f"{settings.vectors.table}__{'_'.join(words)}"


def current_index(settings: Settings) -> str:
    """The index every process reads and writes now."""
    return settings.vectors.collection if settings.vectors.backend == "weaviate" else settings.vectors.table


def with_index(settings: Settings, index: str, model: str | None = None) -> Settings:
    """`settings` pointed at `index` (and `model`, when given)."""
    field = "collection" if settings.vectors.backend == "weaviate" else "table"
    update: dict[str, Any] = {"vectors": settings.vectors.model_copy(update={field: index})}
    if model is not None and model != settings.model.name:
        # A checkpoint file, its pin and revision belong to the configured model, not to `model`.
        fresh = {"name": model, "checkpoint": None, "sha256": None, "revision": None}
        update["model"] = settings.model.model_copy(update=fresh)
    return settings.model_copy(update=update)


def cutover_env(settings: Settings, index: str, model: str) -> dict[str, str]:
    """The variables that point every process at `index` and `model`."""
    field = "COLLECTION" if settings.vectors.backend == "weaviate" else "TABLE"
    return {"OMNIBIND_MODEL__NAME": model, f"OMNIBIND_VECTORS__{field}": index}


def sort_key(record: VectorRecord) -> SortKey:
    return (record.tenant or "", record.upload_id)


def in_scope(record: VectorRecord, tenant: str | None) -> bool:
    """Whether a reindex of `tenant` (None: every tenant) takes `record`."""
    return tenant is None or record.tenant == tenant


def pending_keys(records: Iterable[VectorRecord], tenant: str | None, after: SortKey | None) -> list[SortKey]:
    """The keys of the records still to do, in the reindex order: those of the scope that sort
    after the cursor `after`."""
    keys = sorted(sort_key(record) for record in records if in_scope(record, tenant))
    return [key for key in keys if after is None or key > after]


def upload_event(record: VectorRecord) -> UploadEvent:
    """The upload event that re-embeds `record` from its object: same id, tenant, source,
    metadata and submission time. Its modality is left to the content (AUTO), as a new model
    may embed a container differently (ImageBind: a video; a family without video: its sound).
    Raises `PermanentError` (``no_object``) for an inline text upload: its text was never
    stored, only its vector."""
    from shared.errors import PermanentError

    if record.object is None:
        raise PermanentError(
            "an inline text upload keeps no object to re-embed from; submit its text again",
            reason="no_object",
        )
    declared = Modality.AUDIO if record.modality is Modality.AUDIO else Modality.AUTO
    return UploadEvent(
        id=record.upload_id,
        object=record.object,
        modality=declared,
        source=record.source,
        tenant=record.tenant,
        metadata=dict(record.metadata),
        submitted_at=record.created_at,
    )


def is_current(held: VectorRecord | None, source: VectorRecord, model: str) -> bool:
    """Whether the target's record `held` already is `source` re-embedded by `model` (a
    catch-up pass skips it): same model, same bytes, written after the source's last write."""
    return (
        held is not None
        and held.model == model
        and held.sha256 == source.sha256
        and held.tenant == source.tenant
        and held.indexed_at >= source.indexed_at
    )


@dataclass(frozen=True, slots=True)
class Failure:
    upload_id: str
    reason: str
    error: str
    at: str


@dataclass(frozen=True, slots=True)
class Progress:
    target: str
    scope: str
    model: str
    status: str
    total: int
    embedded: int
    skipped: int
    failed: int
    cursor: SortKey | None
    updated_at: str

    @property
    def done(self) -> int:
        return self.embedded + self.skipped + self.failed


class ReindexState:
    """The persisted progress of one reindex (target index, tenant scope) in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, target: str, tenant: str | None) -> None:
        self.redis = client
        self.scope = tenant or ALL_SCOPE
        self.target = target
        base = RedisKeys(prefix).reindex(target, self.scope)
        self.key, self.failed_key = base, f"{base}:failed"

    def begin(self, *, model: str, checkpoint: str, source: str, fresh: bool) -> SortKey | None:
        """Start or resume; returns the cursor to resume after (None: from the start). A
        finished reindex, or `fresh`, starts a new pass from the start (a catch-up: uploads
        already current in the target are skipped, not re-embedded)."""
        with translate_redis_errors("reading the reindex state"):
            state = self._raw()
            if fresh or state.get("status") == "complete" or state.get("model") not in (None, model):
                self.redis.delete(self.key)
                state = {}
            fields: dict[Any, Any] = {"model": model, "checkpoint": checkpoint, "source": source, "status": "running"}
            if not state:
                fields |= {"started_at": utcnow().isoformat(), "embedded": "0", "skipped": "0", "failed": "0"}
            self.redis.hset(self.key, mapping=fields)
        cursor = state.get("cursor")
        return tuple(json.loads(cursor)) if cursor else None  # type: ignore[return-value]

    def set_total(self, total: int) -> None:
        with translate_redis_errors("writing the reindex state"):
            self.redis.hset(self.key, "total", str(total))

    def advance(self, cursor: SortKey, *, embedded: Iterable[str], skipped: int, failures: Iterable[Failure]) -> None:
        """Record a finished batch: its outcomes and the new cursor, in one transaction (a
        crash leaves the cursor before the batch, whose records are then rewritten)."""
        done = list(embedded)
        failed = list(failures)
        with translate_redis_errors("writing the reindex state"):
            pipe = self.redis.pipeline(transaction=True)
            if done:
                pipe.hdel(self.failed_key, *done)
            for failure in failed:
                doc = {"reason": failure.reason, "error": failure.error[:2000], "at": failure.at}
                pipe.hset(self.failed_key, failure.upload_id, json.dumps(doc))
            pipe.hincrby(self.key, "embedded", len(done))
            pipe.hincrby(self.key, "skipped", skipped)
            pipe.hincrby(self.key, "failed", len(failed))
            pipe.hset(self.key, mapping={"cursor": json.dumps(list(cursor)), "updated_at": utcnow().isoformat()})
            pipe.execute()

    def finish(self) -> None:
        with translate_redis_errors("writing the reindex state"):
            self.redis.hset(self.key, mapping={"status": "complete", "updated_at": utcnow().isoformat()})

    def progress(self) -> Progress | None:
        with translate_redis_errors("reading the reindex state"):
            state = self._raw()
        if not state:
            return None
        cursor = state.get("cursor")
        return Progress(
            target=self.target,
            scope=self.scope,
            model=state.get("model", ""),
            status=state.get("status", ""),
            total=int(state.get("total", 0)),
            embedded=int(state.get("embedded", 0)),
            skipped=int(state.get("skipped", 0)),
            failed=int(state.get("failed", 0)),
            cursor=tuple(json.loads(cursor)) if cursor else None,  # type: ignore[arg-type]
            updated_at=state.get("updated_at", ""),
        )

    def failures(self) -> list[Failure]:
        """The uploads whose re-embedding failed (and has not succeeded since), by id."""
        with translate_redis_errors("reading the reindex failures"):
            raw: Mapping[bytes | str, bytes | str] = self.redis.hgetall(self.failed_key)  # type: ignore[assignment]
        out = []
        for upload_id, doc in raw.items():
            fields = json.loads(doc)
            name = upload_id.decode() if isinstance(upload_id, bytes) else upload_id
            out.append(Failure(name, fields["reason"], fields["error"], fields["at"]))
        return sorted(out, key=lambda failure: failure.upload_id)

    def _raw(self) -> dict[str, str]:
        raw: Mapping[bytes | str, bytes | str] = self.redis.hgetall(self.key)  # type: ignore[assignment]
        return {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }


def failure_of(upload_id: str, exc: BaseException) -> Failure:
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return Failure(upload_id, str(reason), str(exc) or type(exc).__name__, utcnow().isoformat())


def summary_line(progress: Progress) -> str:
    return (
        f"{progress.embedded} re-embedded, {progress.skipped} already current, {progress.failed} failed"
        f" of {progress.total} ({progress.status})"
    )
