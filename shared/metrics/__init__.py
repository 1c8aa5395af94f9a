"""Prometheus metrics for a pipeline of many processes on many hosts.

Workers (prefork children, thread pools, any number of containers) add to counters and
histogram buckets kept in Redis (`recorder.MetricsRecorder`: buffered in memory, written
once a second per process with one pipelined round trip, so an upload pays nothing on its
path). Exporters — ``/metrics`` of the HTTP API and `omnibind metrics` — read those
counters plus live gauges (queue lengths, uploads per status, live workers) from Redis at
scrape time (`collector.PipelineCollector`). `catalog` names every metric once.
"""
