"""Every metric omnibind exports, named once, and how recorded ones are laid out in Redis.

Recorded families (counters and histograms that workers add to) live in one Redis hash
each, ``{prefix}:metrics:{name}``. A field is ``<label values as a JSON array>`` for a
counter, and ``<label values as a JSON array>\\t<part>`` for a histogram, where part is
``count``, ``sum`` or a bucket's upper bound (``0.25``, ``+Inf``). Bucket fields count the
observations that fell into that bucket alone (not cumulative, unlike Prometheus): each
observation then adds to exactly one field. JSON escapes tabs, so the last tab always
separates the part.

Gauges are not recorded: exporters read them live from Redis at scrape time.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

COUNT = "count"
SUM = "sum"
INF = "+Inf"

# Seconds: from sub-millisecond stage work on tiny inputs to minutes of backlog.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


@dataclass(frozen=True)
class Family:
    """A recorded metric family. `name` is the Prometheus name (counters get ``_total``
    appended on export, histograms ``_bucket``/``_sum``/``_count``)."""

    name: str
    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @functools.cached_property
    def bucket_names(self) -> tuple[str, ...]:
        """The bucket fields' names, ``+Inf`` last."""
        return (*(format_bound(b) for b in self.buckets), INF)

    def bucket_of(self, value: float) -> str:
        """The bucket field an observation of `value` belongs to (smallest bound >= value)."""
        return self.bucket_names[bisect.bisect_left(self.buckets, value)]


@dataclass(frozen=True)
class Gauge:
    """A gauge exporters read live; listed here so documentation and tests see it."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


STAGE_DURATION = Family(
    "omnibind_stage_duration_seconds",
    "histogram",
    "Time one stage task spent on an upload (outcome: ok = handed on, error = failed or retried).",
    ("stage", "outcome"),
    SECONDS_BUCKETS,
)
UPLOAD_LATENCY = Family(
    "omnibind_upload_latency_seconds",
    "histogram",
    "Time from an upload's submission (submitted_at) until it reached a status.",
    ("status",),
    SECONDS_BUCKETS,
)
UPLOADS_INDEXED = Family("omnibind_uploads_indexed", "counter", "Uploads indexed.", ("modality",))
UPLOADS_FAILED = Family(
    "omnibind_uploads_failed", "counter", "Uploads that failed for good, by stage and reason.", ("stage", "reason")
)
STAGE_RETRIES = Family(
    "omnibind_stage_retries", "counter", "Stage retries after a transient error, by reason.", ("stage", "reason")
)
DEAD_LETTERS_REDRIVEN = Family(
    "omnibind_dead_letters_redriven",
    "counter",
    "Dead letters sent again by the sweeper once the dependency their reason names answered, by reason.",
    ("reason",),
)
UPLOADS_FLAGGED = Family(
    "omnibind_uploads_flagged", "counter", "Uploads indexed with a moderation flag.", ("modality",)
)
FLAGGED_CATEGORIES = Family(
    "omnibind_flagged_categories", "counter", "Moderation categories that fired on indexed uploads.", ("category",)
)
BATCH_SIZE = Family(
    "omnibind_batch_size",
    "histogram",
    "Items per batch run by a micro-batched runtime (gpu: model forwards, index: vector-store writes).",
    ("runtime",),
    BATCH_BUCKETS,
)
BATCH_FAILURES = Family(
    "omnibind_batch_failures", "counter", "Batches that failed as a whole, by runtime.", ("runtime",)
)

RECORDED: tuple[Family, ...] = (
    STAGE_DURATION,
    UPLOAD_LATENCY,
    UPLOADS_INDEXED,
    UPLOADS_FAILED,
    STAGE_RETRIES,
    DEAD_LETTERS_REDRIVEN,
    UPLOADS_FLAGGED,
    FLAGGED_CATEGORIES,
    BATCH_SIZE,
    BATCH_FAILURES,
)

GAUGES: tuple[Gauge, ...] = (
    Gauge("omnibind_queue_length", "Messages waiting in a Celery queue.", ("queue",)),
    Gauge("omnibind_queue_unacked", "Messages reserved by workers and not yet acknowledged (retries included)."),
    Gauge(
        "omnibind_uploads", "Uploads now in each status (indexed/failed: finished and not since re-run).", ("status",)
    ),
    Gauge("omnibind_workers", "Live workers (fresh heartbeat) of each kind.", ("kind",)),
    Gauge("omnibind_results_stream_length", "Entries in the results stream."),
    Gauge("omnibind_dead_letters", "Entries in the dead-letter stream."),
    Gauge("omnibind_backpressure_max_cpu_queue", "The cpu-queue length above which uploads are refused (0 = never)."),
    Gauge("omnibind_redis_up", "1 when the exporter could read Redis at this scrape, else 0."),
)


def format_bound(bound: float) -> str:
    """A bucket bound as Prometheus prints it (``0.25``, ``1.0``, ``+Inf``)."""
    return INF if math.isinf(bound) else repr(float(bound))


def labels_field(values: Sequence[str]) -> str:
    return _labels_field(tuple(str(v) for v in values))


@functools.lru_cache(maxsize=4096)  # label sets are few and recorded per upload: encode once
def _labels_field(values: tuple[str, ...]) -> str:
    return json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)


def histogram_field(values: Sequence[str], part: str) -> str:
    return f"{labels_field(values)}\t{part}"


def parse_field(field: str) -> tuple[tuple[str, ...], str | None]:
    """(label values, part) of a stored field; part is None for a counter field.

    Raises `ValueError` for a field that is not in this layout.
    """
    encoded, tab, part = field.rpartition("\t")
    if not tab:
        encoded, part = field, ""
    values = json.loads(encoded)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"not a metrics field: {field!r}")
    return tuple(values), (part if tab else None)
