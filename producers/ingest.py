"""`omnibind ingest`: submit files, optionally wait and summarise what became of each."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from producers.client import Client
from shared.errors import Busy, OmnibindError
from shared.events import Modality
from shared.status import StatusRecord


@dataclass(frozen=True)
class Submitted:
    path: Path
    upload_id: str | None
    error: str | None = None


@dataclass(frozen=True)
class Summary:
    submitted: list[Submitted]
    finished: dict[str, StatusRecord]

    @property
    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter(record.status.value for record in self.finished.values())
        counts["not submitted"] = sum(1 for s in self.submitted if s.upload_id is None)
        counts["unfinished"] = sum(1 for s in self.submitted if s.upload_id and s.upload_id not in self.finished)
        return counts

    def failures(self) -> list[tuple[Path, str]]:
        rows = [(s.path, s.error or "") for s in self.submitted if s.upload_id is None]
        for s in self.submitted:
            record = self.finished.get(s.upload_id or "")
            if record is not None and record.status.value == "failed":
                rows.append((s.path, f"{record.error_reason}: {record.error}"))
        return rows


def submit_files(
    client: Client,
    files: Sequence[Path],
    *,
    modality: Modality = Modality.AUTO,
    tenant: str | None = None,
    progress: bool = True,
) -> list[Submitted]:
    """Submit each file; a file that cannot be submitted is reported, not fatal. While the
    pipeline applies backpressure (`Busy`), wait and submit the same file again."""
    submitted = []
    pause_s = client.settings.backpressure.retry_after_s
    for path in tqdm(files, desc="submitting", unit="file", disable=not progress):
        while True:
            try:
                upload_id = client.submit(path, modality=modality, tenant=tenant, metadata={"filename": path.name})
                submitted.append(Submitted(path, upload_id))
            except Busy:
                time.sleep(pause_s)
                continue
            except (OmnibindError, OSError) as exc:
                submitted.append(Submitted(path, None, f"{type(exc).__name__}: {exc}"))
            break
    return submitted


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
