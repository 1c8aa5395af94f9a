"""A chaos run on the production shape (tests/support/production.py), shared by the CI-sized
test (tests/robustness/test_production_chaos.py) and the benchmark (bench/chaos.py).

A writer thread puts objects into MinIO with the SDK at a steady rate, as a platform would,
retrying a put while MinIO is down. Meanwhile Weaviate is killed with SIGKILL and started
again on the same data dir, then MinIO is stopped for a while and started again. Afterwards
every object is accounted for: its upload ended ``indexed`` with exactly one Weaviate object,
or ``failed`` with a reason.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from minio.error import MinioException
from urllib3.exceptions import HTTPError

from producers.bridge.minio_events import minio_upload_id
from shared.events import UploadStatus
from tests.support.chaos import synthetic_upload
from tests.support.production import ProductionShape
from tests.support.waiting import wait_until

log = logging.getLogger(__name__)

# Short clocks so that a run ends in minutes, and enough retries to ride out the outages.
PRODUCTION_CLOCKS: dict[str, Any] = {
    "visibility_timeout_s": 45,
    "task_time_limit_s": 20,
    "unacked_restore_interval_s": 1,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 2,
    "max_retries": 40,
    "stall_timeout_s": 60,
    "sweep_interval_s": 5,
}


@dataclass
class ProductionChaosReport:
    objects: int
    weaviate_kills: int = 0
    weaviate_down_s: float = 0.0
    minio_stops: int = 0
    minio_down_s: float = 0.0
    put_retries: int = 0
    ingest_s: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    failure_reasons: Counter[str] = field(default_factory=Counter)
    weaviate_objects_per_indexed: Counter[int] = field(default_factory=Counter)
    stray_objects: int = 0

    def problems(self) -> list[str]:
        found = []
        if set(self.statuses) - {"indexed", "failed"}:
            found.append(f"uploads not finished: {dict(self.statuses)}")
        if set(self.weaviate_objects_per_indexed) - {1}:
            found.append(f"Weaviate objects per indexed upload: {dict(self.weaviate_objects_per_indexed)}")
        if self.stray_objects:
            found.append(f"{self.stray_objects} Weaviate objects of uploads that are not indexed")
        if "?" in self.failure_reasons:
            found.append("a failed upload without a reason")
        return found

    def summary(self) -> str:
        return (
            f"{self.objects} objects, Weaviate killed {self.weaviate_kills}x ({self.weaviate_down_s:.1f} s down), "
            f"MinIO stopped {self.minio_stops}x ({self.minio_down_s:.1f} s down), {self.put_retries} put retries, "
            f"statuses {dict(self.statuses)}, reasons {dict(self.failure_reasons)}, "
            f"objects per indexed upload {dict(self.weaviate_objects_per_indexed)}, stray {self.stray_objects}, "
            f"{self.ingest_s:.0f} s"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "objects": self.objects,
            "weaviate_kills": self.weaviate_kills,
            "weaviate_down_s": round(self.weaviate_down_s, 1),
            "minio_stops": self.minio_stops,
            "minio_down_s": round(self.minio_down_s, 1),
            "put_retries": self.put_retries,
            "ingest_s": round(self.ingest_s, 1),
            "statuses": dict(self.statuses),
            "failure_reasons": dict(self.failure_reasons),
            "weaviate_objects_per_indexed_upload": dict(self.weaviate_objects_per_indexed),
            "stray_objects": self.stray_objects,
        }


class ObjectWriter(threading.Thread):
    """Puts `count` synthetic files (texts, PNGs, WAVs) into the bucket at `rate_per_s`."""

    def __init__(self, shape: ProductionShape, count: int, rate_per_s: float) -> None:
        super().__init__(name="object-writer", daemon=True)
        self.shape = shape
        self.keys = [_key(index) for index in range(count)]
        self.rate_per_s = rate_per_s
        self.retries = 0
        self.written = 0
        # The second half is written only once MinIO has been stopped, so that the outage
        # always meets puts (however long the Weaviate restart before it took).
        self.second_half = threading.Event()

    def run(self) -> None:
        s3 = self.shape.s3()
        for index, key in enumerate(self.keys):
            if index == len(self.keys) // 2:
                self.second_half.wait(timeout=600)
            data = _payload(index)
            while True:
                try:
                    s3.put_object(self.shape.bucket, key, io.BytesIO(data), len(data))
                    break
                except (MinioException, HTTPError, OSError):
                    self.retries += 1  # MinIO is down: a platform would retry too
                    time.sleep(0.5)  # the platform's pause before retrying
            self.written += 1
            time.sleep(1.0 / self.rate_per_s)  # paced like a platform writing objects


def run_production_chaos(
    shape: ProductionShape,
    *,
    objects: int,
    rate_per_s: float,
    minio_down_s: float,
    weaviate_down_s: float = 3.0,
    finish_timeout_s: float = 300.0,
) -> ProductionChaosReport:
    """Write `objects` files while killing Weaviate (after a fifth of them) and stopping
    MinIO (after half of them); wait for every upload to end and account for each."""
    report = ProductionChaosReport(objects)
    writer = ObjectWriter(shape, objects, rate_per_s)
    started = time.monotonic()
    writer.start()
    wait_until(
        lambda: writer.written >= objects // 5, timeout_s=120, what="the first objects to be written", poll_s=0.3
    )
    killed = time.monotonic()
    shape.weaviate.stop(kill=True)
    time.sleep(weaviate_down_s)  # the outage lasts this long
    shape.weaviate.start()
    report.weaviate_kills, report.weaviate_down_s = 1, time.monotonic() - killed
    log.warning("Weaviate killed and back after %.1f s", report.weaviate_down_s)
    wait_until(
        lambda: writer.written >= objects // 2, timeout_s=120, what="half of the objects to be written", poll_s=0.3
    )
    stopped = time.monotonic()
    shape.minio.stop()
    writer.second_half.set()
    time.sleep(minio_down_s)  # the outage lasts this long
    shape.minio.start()
    report.minio_stops, report.minio_down_s = 1, time.monotonic() - stopped
    log.warning("MinIO stopped and back after %.1f s", report.minio_down_s)
    writer.join(timeout=finish_timeout_s)
    report.put_retries = writer.retries
    ids = [minio_upload_id(shape.bucket, key) for key in writer.keys]
    records = shape.client.wait(ids, timeout_s=finish_timeout_s)
    report.ingest_s = time.monotonic() - started
    _account(shape, ids, records, report)
    log.warning("production chaos run: %s", report.summary())
    return report


def _account(shape: ProductionShape, ids: list[str], records: dict[str, Any], report: ProductionChaosReport) -> None:
    statuses = {upload_id: records[upload_id].status if upload_id in records else None for upload_id in ids}
    report.statuses = Counter(status.value if status else "unfinished" for status in statuses.values())
    report.failure_reasons = Counter(
        records[upload_id].error_reason or "?" for upload_id, s in statuses.items() if s is UploadStatus.FAILED
    )
    per_upload = shape.weaviate_objects_per_upload()
    indexed = {upload_id for upload_id, status in statuses.items() if status is UploadStatus.INDEXED}
    report.weaviate_objects_per_indexed = Counter(per_upload[upload_id] for upload_id in indexed)
    report.stray_objects = sum(
        n for upload_id, n in per_upload.items() if upload_id in ids and upload_id not in indexed
    )


def _key(index: int) -> str:
    upload = synthetic_upload(index, run="chaos")
    return f"chaos/{upload.filename or upload.upload_id + '.txt'}"


def _payload(index: int) -> bytes:
    upload = synthetic_upload(index, run="chaos")
    return upload.data if upload.data is not None else (upload.text or "").encode()
