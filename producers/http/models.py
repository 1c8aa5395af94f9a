"""Request and response bodies of the HTTP API (beyond `UploadEvent` and `StatusRecord`,
which it serves as they are)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.api_keys import TENANT_PATTERN
from shared.events import Modality, ObjectRef, UploadStatus
from shared.vectors.records import SearchFilters, SearchHit, TenantScope

MAX_K = 100


class ContentModality(StrEnum):
    """A modality an upload can have once sniffed (no ``auto``)."""

    IMAGE = "image"
    TEXT = "text"
    AUDIO = "audio"
    VIDEO = "video"


class UploadAccepted(BaseModel):
    id: str = Field(description="the upload id (the caller's or a generated one)")
    status: UploadStatus = Field(
        UploadStatus.QUEUED, description="queued; for a repeated submission, the status of the unfinished run"
    )
    status_url: str = Field(description="where to follow it: GET this path")
    run: int = Field(1, description="the run of this id the submission belongs to (1 = its first)")
    started: bool = Field(
        True, description="false: a run of this id was unfinished, so nothing was queued again (answered 200)"
    )


class SearchOptions(BaseModel):
    """How many hits, and which uploads may be hits (all filters are conjunctive)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=MAX_K, description="number of hits")
    modality: ContentModality | None = Field(None, description="only uploads of this modality")
    flagged: bool | None = Field(None, description="only flagged (true) or unflagged (false) uploads")
    tenant: str | None = Field(
        None, pattern=TENANT_PATTERN, description="only this tenant's uploads (one of the API key's tenants)"
    )

    def filters(self, scope: TenantScope) -> SearchFilters:
        """The filters within `scope` (the tenants the caller's key may search)."""
        return SearchFilters(
            scope=scope,
            modality=Modality(self.modality.value) if self.modality else None,
            flagged=self.flagged,
        )


class TextSearch(SearchOptions):
    """A text query (JSON). Search by image or audio with a multipart body instead."""

    text: str = Field(min_length=1, description="the query, in any words")


class Hit(BaseModel):
    upload_id: str
    score: float = Field(description="cosine similarity to the query (1 = same direction)")
    modality: ContentModality
    object: ObjectRef | None = Field(None, description="where the original is stored; null for inline texts")
    tenant: str | None = None
    source: str
    flagged: bool
    categories: list[str] = Field(description="moderation categories that fired")
    metadata: dict[str, str]
    model: str = Field(description="embedding model (imagebind-huge, or the tiny random test model)")
    indexed_at: datetime
    part: str = Field(
        "main", description="the upload's vector that matched: main, or a part such as a video's audio_track"
    )
    detail: str | None = Field(
        None,
        description="why that part matched, in words: for the transcript, the passage and its times "
        '(transcript: said "..." at 0:03-0:09)',
    )

    @classmethod
    def of(cls, hit: SearchHit) -> Hit:
        record = hit.record
        return cls(
            upload_id=record.upload_id,
            score=hit.score,
            modality=ContentModality(record.modality.value),
            object=record.object,
            tenant=record.tenant,
            source=record.source,
            flagged=record.moderation.flagged,
            categories=list(record.moderation.categories),
            metadata=dict(record.metadata),
            model=record.model,
            indexed_at=record.indexed_at,
            part=hit.part,
            detail=hit.detail or None,
        )


class SearchResults(BaseModel):
    query: ContentModality = Field(description="what the query was taken for")
    hits: list[Hit] = Field(description="best first")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    ready: bool = Field(description="Redis and the object store answer, and a worker of each kind is live")
    redis: Check
    objects: Check
    workers: dict[str, int] = Field(description="live workers per kind (cpu, gpu, index)")
