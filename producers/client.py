"""The Python producer API: hand uploads to omnibind, follow them, search what is indexed.

    from producers.client import Client
    with Client() as omnibind:
        upload_id = omnibind.submit(Path("cat.jpg"), tenant="acme")
        omnibind.wait([upload_id], timeout_s=60)
        hits = omnibind.search(text="a cat on a sofa", k=5)

The client stores blobs in the object store when given a path or bytes, records the upload
as "queued" and enqueues it by task name — unless a run of the same id is unfinished: a
repeated submission then changes and sends nothing; it never loads the model (a search asks the GPU
workers for the query embedding).
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TypedDict, Unpack

import numpy as np
from celery import Celery
from kombu.exceptions import OperationalError

from producers.bridge.minio_events import UPLOAD_ID_METADATA
from producers.query import QueryEmbedding, embed_query, query_of, search_embedding
from shared.backpressure import check_backpressure
from shared.config import Settings, get_settings
from shared.connections import Connections
from shared.deletions import PendingDeletions, send_delete
from shared.errors import InvalidKey
from shared.events import DeleteRequest, Modality, ObjectRef, UploadEvent, new_upload_id
from shared.fair_queue import FairQueue
from shared.objects.keys import validate_key
from shared.queue import QueueName, TaskName, make_celery, upload_headers
from shared.quotas import QuotaGate
from shared.redis_client import RedisUnavailable
from shared.replication import NotReplicated, wait_for_replicas
from shared.status import RunStart, StatusRecord, StatusStore
from shared.tenant_inflight import TenantInflight
from shared.vectors.records import ALL_TENANTS, SearchFilters, SearchHit


class SubmitOptions(TypedDict, total=False):
    """What `Client.submit` takes besides the item (`Client.submit_run` documents each)."""

    modality: Modality
    upload_id: str | None
    tenant: str | None
    metadata: Mapping[str, str] | None
    filename: str | None
    content_type: str | None


def object_key_for(upload_id: str, filename: str | None) -> str:
    """`<upload id>/<file name>`: unique per upload, readable in the bucket; a name that is not
    a valid key falls back to the id alone (plus the extension when that one is safe)."""
    if filename:
        name = PurePosixPath(filename.replace("\\", "/")).name
        try:
            return validate_key(f"{upload_id}/{name}")
        except InvalidKey:
            suffix = PurePosixPath(name).suffix
            if suffix.isascii() and suffix[1:].isalnum():
                return f"{upload_id}/upload{suffix}"
    return f"{upload_id}/upload"


def event_size(event: UploadEvent) -> int:
    """The bytes an event hands over, as quotas count them (`shared.quotas`)."""
    if event.text is not None:
        return len(event.text.encode())
    return event.object.size or 0 if event.object is not None else 0


def _item_size(item: str | os.PathLike[str] | bytes | ObjectRef) -> int:
    if isinstance(item, bytes):
        return len(item)
    if isinstance(item, ObjectRef):
        return item.size or 0
    try:
        return Path(item).stat().st_size
    except OSError:  # reading it will fail with the proper error
        return 0


class Client(Connections):
    """A producer. Cheap to create; connections open on first use. Thread-safe."""

    close_order = ("objects", "vectors", "celery", "redis")

    def __init__(self, settings: Settings | None = None, *, source: str = "api") -> None:
        super().__init__(settings or get_settings())
        self.source = source

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    @property
    def statuses(self) -> StatusStore:
        return self._once("status", lambda: StatusStore.from_settings(self.redis, self.settings))

    @property
    def deletions(self) -> PendingDeletions:
        return self._once("deletions", lambda: PendingDeletions.from_settings(self.redis, self.settings))

    @property
    def tenant_inflight(self) -> TenantInflight:
        return self._once("tenant_inflight", lambda: TenantInflight.from_settings(self.redis, self.settings))

    @property
    def fair_queue(self) -> FairQueue:
        return self._once("fair_queue", lambda: FairQueue.from_settings(self.redis, self.settings))

    @property
    def quotas(self) -> QuotaGate:
        return self._once("quotas", lambda: QuotaGate.from_settings(self.redis, self.settings))

    @property
    def celery(self) -> Celery:
        return self._once("celery", lambda: make_celery(self.settings, "omnibind-producer"))

    # -- submitting ----------------------------------------------------------------------

    def submit(self, item: str | os.PathLike[str] | bytes | ObjectRef, **options: Unpack[SubmitOptions]) -> str:
        """Hand one upload to omnibind and return its id.

        `item`: a file path (stored in the object store), bytes (stored), or an `ObjectRef`
        to an object already in the store (not copied); `options` as `submit_run` takes them.
        Raises `PermanentError` for an invalid upload, `Busy` when the pipeline applies
        backpressure (checked before anything is stored), `TransientError` when Redis or
        storage is unavailable.
        """
        return self.submit_run(item, **options).upload_id

    def submit_run(
        self,
        item: str | os.PathLike[str] | bytes | ObjectRef,
        *,
        modality: Modality = Modality.AUTO,
        upload_id: str | None = None,
        tenant: str | None = None,
        metadata: Mapping[str, str] | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> RunStart:
        """`submit`, answering whether a run started or which run of `upload_id` is still
        unfinished: then nothing is stored or sent (a repeated submission is a no-op)."""
        check_backpressure(self.redis, self.settings, tenant=tenant)
        upload_id = upload_id or new_upload_id()
        unfinished = self.statuses.get(upload_id)
        if unfinished is not None and not unfinished.terminal:
            # Not even stored: the blob of the run in flight must not change under it.
            return RunStart(upload_id, False, unfinished.run, unfinished.status)
        # Admitted before the blob is stored: an upload refused for its tenant costs nothing.

        def store_and_send() -> RunStart:
            if isinstance(item, ObjectRef):
                ref = item
            else:
                ref = self._store(item, upload_id, filename, content_type, metadata)
            event = UploadEvent(
                id=upload_id,
                object=ref,
                modality=modality,
                source=self.source,
                tenant=tenant,
                metadata=dict(metadata or {}),
            )
            return self._send(event)

        return self._admitted(tenant, _item_size(item), store_and_send)

    def submit_text(
        self,
        text: str,
        *,
        upload_id: str | None = None,
        tenant: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Hand an inline text upload to omnibind (nothing is stored) and return its id."""
        event = UploadEvent(
            id=upload_id or new_upload_id(),
            text=text,
            modality=Modality.TEXT,
            source=self.source,
            tenant=tenant,
            metadata=dict(metadata or {}),
        )
        return self.enqueue(event)

    def enqueue(self, event: UploadEvent) -> str:
        """Record `event` as queued and send it to the CPU stage. The status record is written
        first: an upload can be queried as soon as this returns. While a run of the same id
        is unfinished this is a no-op (see `enqueue_run`). Raises `Busy` when the pipeline
        applies backpressure (`shared.backpressure`)."""
        return self.enqueue_run(event).upload_id

    def enqueue_run(self, event: UploadEvent) -> RunStart:
        """`enqueue`, answering what happened: a new run started and was sent, or a run of
        this id is unfinished (or this very submission was recorded already) and nothing was
        sent — one run, one message, one result, however many submit it at once."""
        check_backpressure(self.redis, self.settings, tenant=event.tenant)
        return self._admitted(event.tenant, event_size(event), lambda: self._send(event))

    def _admitted(self, tenant: str | None, size: int, send: Callable[[], RunStart]) -> RunStart:
        """Run `send` within the tenant's in-flight limit and quota: the reservation is given
        back unless a run started (a repeat of a run in flight is accepted nothing new)."""
        self.tenant_inflight.check(tenant)
        reservation = self.quotas.reserve(tenant, size)
        try:
            start = send()
        except BaseException as exc:
            if not (isinstance(exc, NotReplicated) and exc.run_started):
                self.quotas.refund(reservation)
            raise
        if not start.started:
            self.quotas.refund(reservation)
        return start

    def _send(self, event: UploadEvent) -> RunStart:
        start = self.statuses.start_run(event)
        # Nothing is confirmed before the record is on the replicas too: a failover cannot
        # take back an upload we answered for (shared.replication). When they don't confirm,
        # nothing is sent: the record stands on the primary, so a retry of this id finds the
        # run in flight (instead of starting another once this one finished), and if no retry
        # comes the stall sweeper sends it. The message itself needs no WAIT: should a failover
        # drop it, the replicated record is what the sweeper re-drives from.
        opts = self.settings.redis
        try:
            wait_for_replicas(self.redis, self.settings.queue_prefix, opts.wait_replicas, opts.wait_timeout_ms)
        except NotReplicated as exc:
            exc.run_started = start.started  # the run stands: so does its quota reservation
            raise
        if start.started:
            self.tenant_inflight.started(event.tenant, event.id, int(time.time() * 1000))
            if self.settings.fairness.enabled:
                # Its tenant's turn comes from the dispatcher (shared.fair_queue). Should this
                # push fail, the recorded run is sent by the stall sweeper, as a lost message.
                self.fair_queue.push(event)
            else:
                self.send_to_pipeline(event)
        return start

    def delete(self, request: DeleteRequest) -> None:
        """Delete an upload's vector record (task ``omnibind.delete`` on the index queue). The
        pending deletion is recorded first (`shared.deletions`), so a message lost on the way
        is sent again by the stall sweeper. Raises `RedisUnavailable` (nothing was lost: call
        again)."""
        token = self.deletions.record(request)
        send_delete(self.celery, request, token)

    def send_to_pipeline(self, event: UploadEvent, sparse: bool = False) -> None:
        """Send `event` to the first stage without touching its status record (`enqueue`
        records it first; `omnibind dead --retry` requeues it first). Sending an upload that
        is already in flight is harmless: every stage is idempotent. `sparse`: a sparse
        tenant's upload (`shared.fair_queue`), which no batcher holds back for company. Raises
        `RedisUnavailable` when the broker cannot be reached (after Celery's own publish
        retries)."""
        try:
            self.celery.send_task(
                TaskName.PREPROCESS,
                args=[event.model_dump(mode="json")],
                queue=QueueName.CPU,
                # Nobody waits for a result: without this, Celery's Redis result backend
                # SUBSCRIBEs to (and later UNSUBSCRIBEs from) a result channel for every
                # message sent, three round trips instead of one.
                ignore_result=True,
                argsrepr=f"<upload {event.id}>",
                kwargsrepr="{}",
                headers=upload_headers(event.id, sparse=sparse),
            )
        except OperationalError as exc:
            raise RedisUnavailable(f"cannot send upload {event.id} to the pipeline: {exc}") from exc

    def _store(
        self,
        item: str | os.PathLike[str] | bytes,
        upload_id: str,
        filename: str | None,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
    ) -> ObjectRef:
        if isinstance(item, bytes):
            data = item
        else:
            path = Path(item)
            data = path.read_bytes()
            filename = filename or path.name
        # The declared type is only informational: workers sniff the content.
        declared = content_type or (mimetypes.guess_type(filename)[0] if filename else None)
        key = object_key_for(upload_id, filename)
        # Marks the blob as enqueued here, so its MinIO notification does not enqueue it again.
        marked = {**(metadata or {}), UPLOAD_ID_METADATA: upload_id}
        return self.objects.put(self.settings.objects.bucket, key, data, content_type=declared, metadata=marked)

    # -- following -------------------------------------------------------------------

    def status(self, upload_id: str) -> StatusRecord | None:
        return self.statuses.get(upload_id)

    def wait(self, upload_ids: Iterable[str], *, timeout_s: float) -> dict[str, StatusRecord]:
        """Block until the uploads end (indexed or failed) or `timeout_s` passes; returns the
        records of those that ended."""
        return self.statuses.wait_terminal(list(upload_ids), timeout_s)

    # -- searching -------------------------------------------------------------------

    def embed_query(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        audio: bytes | None = None,
        video: bytes | None = None,
        timeout_s: float = 120.0,
    ) -> np.ndarray:
        """The unit-length embedding of a query, computed by the workers (CPU preprocess ->
        GPU embed). Raises `PermanentError` for a bad query, `QueryFailed` on timeout."""
        return self.embed_query_with_model(text=text, image=image, audio=audio, video=video, timeout_s=timeout_s).vector

    def embed_query_with_model(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        audio: bytes | None = None,
        video: bytes | None = None,
        timeout_s: float = 120.0,
    ) -> QueryEmbedding:
        """`embed_query`, plus the model and checkpoint that made the vector (the blocklist
        and calibration compare vectors of one checkpoint only)."""
        return embed_query(self.celery, query_of(text, image, audio, video), timeout_s=timeout_s)

    def search(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        audio: bytes | None = None,
        video: bytes | None = None,
        k: int = 10,
        filters: SearchFilters | None = None,
        timeout_s: float = 120.0,
    ) -> list[SearchHit]:
        """The `k` indexed uploads nearest to the query (any modality), best first. Without
        `filters` every tenant's uploads are searched: this client holds the stores'
        credentials, so it is an operator's tool (the HTTP API always passes the key's scope).
        Each upload comes once, with the vector that matched (`SearchHit.part`: ``main``, or a
        part such as a video's ``audio_track``). A `video` query is compared by its frames; an
        `audio` query may be a video file too (its sound is used)."""
        query = self.embed_query_with_model(text=text, image=image, audio=audio, video=video, timeout_s=timeout_s)
        return search_embedding(self.vectors, query, k=k, filters=filters or SearchFilters(scope=ALL_TENANTS))
