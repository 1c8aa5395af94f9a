"""`AsyncClient`: the producer API for asyncio code.

Each call runs the synchronous `Client` call in the event loop's default executor, so an
`await` never blocks the loop; the clients underneath (redis-py's pool, the Celery producer,
the object and vector store clients) are shared by those threads, as they are by the threads
of the HTTP API. Only what a producer does all day is here; the rest is on `.sync`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Unpack

import numpy as np

from producers.client import Client, SubmitOptions
from shared.config import Settings
from shared.events import DeleteRequest, ObjectRef, UploadEvent
from shared.status import StatusRecord
from shared.vectors.records import SearchFilters, SearchHit


class AsyncClient:
    """`async with AsyncClient() as omnibind: upload_id = await omnibind.submit("cat.jpg")`."""

    def __init__(self, settings: Settings | None = None, *, source: str = "api") -> None:
        self.sync = Client(settings, source=source)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def submit(self, item: str | os.PathLike[str] | bytes | ObjectRef, **options: Unpack[SubmitOptions]) -> str:
        """`Client.submit`: store (unless an `ObjectRef`), record as queued, send; the id."""
        return await asyncio.to_thread(lambda: self.sync.submit(item, **options))

    async def submit_text(
        self,
        text: str,
        *,
        upload_id: str | None = None,
        tenant: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        return await asyncio.to_thread(
            self.sync.submit_text, text, upload_id=upload_id, tenant=tenant, metadata=metadata
        )

    async def enqueue(self, event: UploadEvent) -> str:
        return await asyncio.to_thread(self.sync.enqueue, event)

    async def delete(self, request: DeleteRequest) -> None:
        await asyncio.to_thread(self.sync.delete, request)

    async def status(self, upload_id: str) -> StatusRecord | None:
        return await asyncio.to_thread(self.sync.status, upload_id)

    async def wait(self, upload_ids: Iterable[str], *, timeout_s: float) -> dict[str, StatusRecord]:
        return await asyncio.to_thread(self.sync.wait, list(upload_ids), timeout_s=timeout_s)

    async def embed_query(self, **query: Any) -> np.ndarray:
        """`Client.embed_query` (the same keyword arguments)."""
        return await asyncio.to_thread(lambda: self.sync.embed_query(**query))

    async def search(self, *, k: int = 10, filters: SearchFilters | None = None, **query: Any) -> list[SearchHit]:
        """`Client.search`: the query as `text=`, `image=`, … exactly as the sync client takes it."""
        return await asyncio.to_thread(lambda: self.sync.search(k=k, filters=filters, **query))
