"""Where blobs and vectors are kept: the object store and the vector store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class ObjectStoreSettings(BaseModel):
    backend: Literal["local", "minio"] = Field(
        "local", description="local directory, or MinIO / any S3-compatible server"
    )
    root: Path | None = Field(None, description="local: directory holding buckets (default DATA_DIR/objects)")
    endpoint: str = Field("localhost:9000", description="minio: host:port of the S3 API")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secure: bool = Field(False, description="minio: use HTTPS")
    region: str | None = Field(None, description="minio: region (only for servers that require one)")
    bucket: str = Field("uploads", description="bucket that producers store blobs in")
    max_bytes: int = Field(200 * 1024 * 1024, description="largest object a worker will read")
    connect_timeout_s: float = Field(3.0, gt=0, description="minio: seconds to wait for a TCP connection")
    read_timeout_s: float = Field(60.0, gt=0, description="minio: seconds to wait for data on a connection")
    retries: int = Field(2, ge=0, le=10, description="minio: extra attempts on connection errors and HTTP 5xx")
    part_size_bytes: int = Field(
        16 * 1024 * 1024, ge=5 * 1024 * 1024, description="minio: uploads larger than this go in parts of this size"
    )


class VectorStoreSettings(BaseModel):
    backend: Literal["lancedb", "weaviate"] = Field("lancedb", description="lancedb (embedded) or weaviate")
    dimension: int | None = Field(
        None, ge=1, description="expected vector dimension; unset = fixed by the first write (1024 huge, 32 tiny)"
    )
    path: Path | None = Field(None, description="lancedb: directory (default DATA_DIR/vectors)")
    table: str = Field(
        "uploads", description="lancedb: table name (`omnibind reindex --model M` writes `<table>__<m>`)"
    )
    compact_every_writes: int = Field(
        100, ge=0, description="lancedb: compact fragments after this many writes by one process (0 = never)"
    )
    compact_every_rows: int = Field(
        10_000,
        ge=0,
        description="lancedb: compact and index after this many upserted rows by one process, if sooner "
        "(0 = by writes only)",
    )
    cleanup_older_than_s: float = Field(
        10.0,
        ge=1,
        description="lancedb: compaction deletes table versions older than this, and runs at most once per this",
    )
    compact_fragment_mb: float = Field(
        4.0,
        gt=0,
        description="lancedb: compaction merges fragments up to about this size and never rewrites one that "
        "reached it (bounds what a compaction copies; larger = fewer files per search)",
    )
    ann_index_min_rows: int = Field(
        20_000, ge=1, description="lancedb: build an ANN index once the table has this many rows (exact below)"
    )
    key_index_min_rows: int = Field(
        100_000, ge=0, description="lancedb: index upload_id once the table has this many rows (keeps upserts fast)"
    )
    lock_timeout_s: float = Field(60.0, gt=0, description="lancedb: longest wait for the cross-process write lock")
    index_cache_mb: int = Field(512, ge=1, description="lancedb: per-process cache of index pages (ANN, upload_id)")
    metadata_cache_mb: int = Field(
        64, ge=1, description="lancedb: per-process cache of table metadata (manifests, fragments, deletions)"
    )
    url: str | None = Field(None, description="weaviate: HTTP URL, e.g. http://weaviate:8080")
    grpc_host: str | None = Field(None, description="weaviate: gRPC host (default: the host of `url`)")
    grpc_port: int = Field(50051, description="weaviate: gRPC port")
    grpc_secure: bool | None = Field(None, description="weaviate: TLS for gRPC (default: same as `url`)")
    api_key: SecretStr | None = None
    collection: str = Field(
        "OmnibindUpload",
        description="weaviate: collection name (`omnibind reindex --model M` writes `<collection>_<M>`)",
    )
    timeout_init_s: float = Field(5.0, gt=0, description="weaviate: start-up checks when connecting")
    timeout_query_s: float = Field(30.0, gt=0, description="weaviate: searches and reads")
    timeout_insert_s: float = Field(90.0, gt=0, description="weaviate: batch writes and deletes")
