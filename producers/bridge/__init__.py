"""The ingest bridge (`omnibind bridge`): feeds the pipeline from platforms in any language.

Two sources, each consumed so that nothing popped is lost if the bridge dies mid-way:

* the Redis stream ``{prefix}:ingest`` (UploadEvent v1 JSON documents; a consumer group,
  XACK after the upload is enqueued, XAUTOCLAIM of entries a dead bridge left pending):
  `stream_events` (pure mapping) + `stream_consumer`;
* MinIO bucket notifications on a Redis list (MinIO's notify_redis target, access format;
  BLMOVE into a processing list, removed only after the enqueue): `minio_events` (pure
  mapping) + `list_consumer`.

Both hand uploads to `enqueue.Ingestor`, which makes a redelivered or repeated event map to
the same upload instead of a second one. `runner` runs the consumers until stopped.
"""
