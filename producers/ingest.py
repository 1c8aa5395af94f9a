"""`omnibind ingest` and `omnibind watch`: submit files under ids derived from their content,
optionally wait, and say what became of each file.

A file's upload id is ``f-`` + 32 hex digits of the SHA-256 of its bytes, its tenant and a
forced modality (`file_upload_id`), never its path: ingesting the same folder again, or the
same file from another folder, names the same upload, so it cannot duplicate a record. A
file whose upload is already indexed is not sent again (outcome ``exists``), one whose run is
unfinished neither (``in_progress``, see `Client.submit_run`); an edited file is new content,
hence a new upload (the old one stays until `omnibind delete`).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tqdm import tqdm

from producers.client import Client
from shared.errors import Busy, OmnibindError
from shared.events import Modality, UploadStatus
from shared.redis_client import RedisUnavailable
from shared.status import StatusRecord

FILE_ID_PREFIX = "f-"
FILE_ID_HEX_DIGITS = 32  # 128 bits: no two different files share an id in practice


class Outcome(StrEnum):
    """What became of one file."""

    SUBMITTED = "submitted"  # a new run started
    IN_PROGRESS = "in_progress"  # a run of the same content is unfinished: nothing sent
    EXISTS = "exists"  # the same content is indexed already: nothing sent
    DUPLICATE = "duplicate"  # an earlier file of this batch has the same content
    ERROR = "error"  # not submitted (unreadable, invalid, Redis down...)
    INDEXED = "indexed"  # with --wait
    FAILED = "failed"  # with --wait
    UNFINISHED = "unfinished"  # with --wait: not finished before the timeout


def file_upload_id(data: bytes, *, tenant: str | None = None, modality: Modality = Modality.AUTO) -> str:
    """The upload id of a file's content for `tenant` (pure): the same bytes give the same id,
    whatever the file's name or folder; another tenant or forced modality another id."""
    digest = hashlib.sha256()
    for part in (tenant or "", "" if modality is Modality.AUTO else modality.value):
        digest.update(part.encode() + b"\0")
    digest.update(data)
    return FILE_ID_PREFIX + digest.hexdigest()[:FILE_ID_HEX_DIGITS]


@dataclass(frozen=True)
class Submitted:
    path: Path
    upload_id: str | None
    error: str | None = None
    outcome: Outcome = Outcome.SUBMITTED


@dataclass(frozen=True)
class Summary:
    submitted: list[Submitted]
    finished: dict[str, StatusRecord]

    def final(self, item: Submitted) -> tuple[Outcome, str | None]:
        """The file's outcome after waiting, and the reason of a failure."""
        if item.upload_id is None:
            return Outcome.ERROR, item.error
        record = self.finished.get(item.upload_id)
        if record is None:
            return Outcome.UNFINISHED, None
        if record.status is UploadStatus.FAILED:
            return Outcome.FAILED, f"{record.error_reason}: {record.error}"
        return Outcome.INDEXED, None

    @property
    def counts(self) -> Counter[str]:
        """Files per final outcome (keys ``indexed``, ``failed``, ``not submitted``, ``unfinished``)."""
        names = {Outcome.ERROR: "not submitted"}
        counts: Counter[str] = Counter({"indexed": 0, "failed": 0, "not submitted": 0, "unfinished": 0})
        for item in self.submitted:
            outcome = self.final(item)[0]
            counts[names.get(outcome, outcome.value)] += 1
        return counts

    def failures(self) -> list[tuple[Path, str]]:
        rows = []
        for item in self.submitted:
            outcome, reason = self.final(item)
            if outcome in (Outcome.ERROR, Outcome.FAILED):
                rows.append((item.path, reason or ""))
        return rows


def submit_file(
    client: Client, path: Path, *, modality: Modality = Modality.AUTO, tenant: str | None = None
) -> Submitted:
    """Submit one file under its content id (`file_upload_id`) unless that upload is indexed
    already or unfinished. Raises `Busy` while the pipeline applies backpressure,
    `RedisUnavailable` when Redis cannot be reached; any other failure is the file's outcome."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Submitted(path, None, f"{type(exc).__name__}: {exc}", Outcome.ERROR)
    upload_id = file_upload_id(data, tenant=tenant, modality=modality)
    try:
        if _indexed(client, upload_id):
            return Submitted(path, upload_id, outcome=Outcome.EXISTS)
        metadata = {"filename": path.name}
        start = client.submit_run(
            data, modality=modality, upload_id=upload_id, tenant=tenant, filename=path.name, metadata=metadata
        )
    except (Busy, RedisUnavailable):
        raise
    except OmnibindError as exc:
        return Submitted(path, None, f"{exc.reason}: {exc}", Outcome.ERROR)
    return Submitted(path, upload_id, outcome=Outcome.SUBMITTED if start.started else Outcome.IN_PROGRESS)


def _indexed(client: Client, upload_id: str) -> bool:
    """Is `upload_id` indexed, with its record still in the vector store (`omnibind delete`
    leaves the status record as it was)?"""
    record = client.status(upload_id)
    if record is None or record.status is not UploadStatus.INDEXED:
        return False
    return client.vectors.get(upload_id) is not None


def submit_files(
    client: Client,
    files: Sequence[Path],
    *,
    modality: Modality = Modality.AUTO,
    tenant: str | None = None,
    progress: bool = True,
) -> list[Submitted]:
    """Submit each file (`submit_file`); a file that cannot be submitted is reported, not
    fatal. While the pipeline applies backpressure (`Busy`), wait and submit the same file
    again. Once Redis cannot be reached, the remaining files are reported unsubmitted at once
    instead of each waiting out its own connection retries."""
    submitted: list[Submitted] = []
    seen: dict[str, Path] = {}
    pause_s = client.settings.backpressure.retry_after_s
    down: str | None = None
    for path in tqdm(files, desc="submitting", unit="file", disable=not progress):
        if down is not None:
            submitted.append(Submitted(path, None, down, Outcome.ERROR))
            continue
        try:
            item = _submit_waiting_out_backpressure(client, path, modality, tenant, pause_s)
        except RedisUnavailable as exc:
            down = f"{exc.reason}: {exc}"
            item = Submitted(path, None, down, Outcome.ERROR)
        if item.upload_id is not None and item.upload_id in seen:
            item = Submitted(path, item.upload_id, f"same content as {seen[item.upload_id]}", Outcome.DUPLICATE)
        elif item.upload_id is not None:
            seen[item.upload_id] = path
        submitted.append(item)
    return submitted


def _submit_waiting_out_backpressure(
    client: Client, path: Path, modality: Modality, tenant: str | None, pause_s: float
) -> Submitted:
    while True:
        try:
            return submit_file(client, path, modality=modality, tenant=tenant)
        except Busy:
            time.sleep(pause_s)


def wait_for(
    client: Client, upload_ids: Iterable[str], *, timeout_s: float, progress: bool = True
) -> dict[str, StatusRecord]:
    """Wait for the uploads to end, with a progress bar of finished uploads."""
    pending = set(upload_ids)
    finished: dict[str, StatusRecord] = {}
    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(pending), desc="processing", unit="upload", disable=not progress) as bar:
        while pending and time.monotonic() < deadline:
            done = client.wait(pending, timeout_s=min(1.0, max(0.0, deadline - time.monotonic())))
            finished.update(done)
            pending -= done.keys()
            bar.update(len(done))
    return finished
