"""Reading the pipeline's metrics from Redis for Prometheus (the exporter side).

`PipelineCollector` is a prometheus_client collector: at each scrape it reads the recorded
families (`shared.metrics.catalog.RECORDED`) and the live gauges (queue lengths, uploads
per status, live workers, stream lengths) from Redis in one pipelined round trip (plus a
SCAN for worker heartbeats). If Redis cannot be read, the scrape still succeeds with
``omnibind_redis_up 0`` and nothing else from Redis.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.config import Settings
from shared.errors import OmnibindError
from shared.events import UploadStatus
from shared.heartbeat import live_workers
from shared.metrics.catalog import COUNT, GAUGES, INF, RECORDED, SUM, Family, parse_field
from shared.queue import QueueName
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.redis_replies import reply_text

log = logging.getLogger(__name__)

WORKER_KINDS = ("cpu", "gpu", "index", "speech")
_GAUGE_HELP = {gauge.name: gauge.help for gauge in GAUGES}

RawHashes = Mapping[str, Mapping[str, str]]  # family name -> stored fields


def counter_family(family: Family, fields: Mapping[str, str]) -> CounterMetricFamily:
    """A counter family from its stored hash; malformed fields are skipped."""
    metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
    for field, raw in sorted(fields.items()):
        try:
            labels, part = parse_field(field)
            value = float(raw)
        except ValueError:
            log.warning("skipping malformed metrics field %r of %s", field, family.name)
            continue
        if part is None and len(labels) == len(family.labels):
            metric.add_metric(list(labels), value)
    return metric


def histogram_family(family: Family, fields: Mapping[str, str]) -> HistogramMetricFamily:
    """A histogram family from its stored (per-bucket, not cumulative) hash."""
    series: defaultdict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for field, raw in fields.items():
        try:
            labels, part = parse_field(field)
            series[labels][part or ""] = float(raw)
        except ValueError:
            log.warning("skipping malformed metrics field %r of %s", field, family.name)
    metric = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    bounds = family.bucket_names
    for labels, parts in sorted(series.items()):
        if len(labels) != len(family.labels):
            continue
        cumulative = 0.0
        buckets = []
        for bound in bounds:
            cumulative += parts.get(bound, 0.0)
            buckets.append((bound, cumulative))
        # The +Inf bucket must equal the count; a flush never splits them, so they agree
        # unless the hash was edited by hand, in which case the count wins.
        buckets[-1] = (INF, parts.get(COUNT, cumulative))
        metric.add_metric(list(labels), buckets, parts.get(SUM, 0.0))
    return metric


def recorded_families(raw: RawHashes) -> Iterator[Metric]:
    """Every recorded family (present even when empty), from the stored hashes."""
    for family in RECORDED:
        fields = raw.get(family.name, {})
        yield counter_family(family, fields) if family.kind == "counter" else histogram_family(family, fields)


def _gauge(name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, _GAUGE_HELP[name], labels=list(labels))


class PipelineCollector(Collector):
    """The whole pipeline's metrics, read from Redis at each scrape."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._keys = RedisKeys(settings.queue_prefix)

    def collect(self) -> Iterator[Metric]:
        up = _gauge("omnibind_redis_up")
        try:
            snapshot = self._read()
        except OmnibindError as exc:
            log.warning("metrics scrape could not read Redis: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from recorded_families(snapshot["families"])
        yield from self._gauges(snapshot)

    def _read(self) -> dict[str, Any]:
        queues = [q.value for q in QueueName]
        with translate_redis_errors("reading metrics"):
            pipe: Any = self._redis.pipeline(transaction=False)
            for family in RECORDED:
                pipe.hgetall(self._keys.metrics(family.name))
            for queue in queues:
                pipe.llen(self._keys.queue(queue))
            pipe.hlen(self._keys.unacked)
            pipe.hgetall(self._keys.counts)
            pipe.xlen(self._keys.results)
            pipe.xlen(self._keys.dead)
            replies = pipe.execute()
            workers = live_workers(self._redis, self._settings.queue_prefix)
        n = len(RECORDED)
        families = {
            family.name: {reply_text(k): reply_text(v) for k, v in reply.items()}
            for family, reply in zip(RECORDED, replies[:n], strict=True)
        }
        lengths = dict(zip(queues, replies[n : n + len(queues)], strict=True))
        unacked, counts, results, dead = replies[n + len(queues) :]
        return {
            "families": families,
            "queues": lengths,
            "unacked": unacked,
            "counts": {reply_text(k): int(v) for k, v in counts.items()},
            "results": results,
            "dead": dead,
            "workers": Counter(str(beat.get("kind")) for beat in workers),
        }

    def _gauges(self, snapshot: dict[str, Any]) -> Iterator[Metric]:
        queue_length = _gauge("omnibind_queue_length", ["queue"])
        for queue, length in snapshot["queues"].items():
            queue_length.add_metric([queue], float(length))
        yield queue_length
        unacked = _gauge("omnibind_queue_unacked")
        unacked.add_metric([], float(snapshot["unacked"]))
        yield unacked
        uploads = _gauge("omnibind_uploads", ["status"])
        for status in UploadStatus:
            uploads.add_metric([status.value], float(snapshot["counts"].get(status.value, 0)))
        yield uploads
        workers = _gauge("omnibind_workers", ["kind"])
        kinds = sorted(set(WORKER_KINDS) | set(snapshot["workers"]))
        for kind in kinds:
            workers.add_metric([kind], float(snapshot["workers"].get(kind, 0)))
        yield workers
        for name, value in (
            ("omnibind_results_stream_length", snapshot["results"]),
            ("omnibind_dead_letters", snapshot["dead"]),
            ("omnibind_backpressure_max_cpu_queue", self._settings.backpressure.max_cpu_queue),
        ):
            gauge = _gauge(name)
            gauge.add_metric([], float(value))
            yield gauge
