"""omnibind's Python API: `import omnibind` and go.

    import omnibind

    with omnibind.Client() as client:
        upload_id = client.submit("cat.jpg", tenant="acme")
        client.wait([upload_id], timeout_s=60)
        acme = omnibind.SearchFilters(scope=omnibind.tenants("acme"))
        hits = client.search(text="a cat on a sofa", k=5, filters=acme)

`omnibind.AsyncClient` is the same surface for asyncio code. Everything named here is the
public, typed surface (this package ships `py.typed`); the modules behind it (`producers`,
`shared`, `workers`) are the implementation and may move. Importing this package never
imports torch: a producer process stays small (tests/test_torch_free.py).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from omnibind.aio import AsyncClient
from producers.client import Client, SubmitOptions
from producers.query import QueryEmbedding, QueryFailed
from shared.config import Settings, get_settings
from shared.errors import (
    Busy,
    ConfigError,
    CorruptMedia,
    InvalidEvent,
    InvalidKey,
    LimitExceeded,
    ObjectNotFound,
    OmnibindError,
    PermanentError,
    StorageUnavailable,
    TransientError,
    UnsupportedMedia,
    VectorStoreUnavailable,
)
from shared.events import (
    Band,
    DeleteRequest,
    Modality,
    Moderation,
    ModerationSignal,
    ObjectRef,
    Result,
    UploadEvent,
    UploadStatus,
    new_upload_id,
    parse_upload_event,
)
from shared.redis_client import RedisUnavailable
from shared.status import RunStart, StatusRecord
from shared.vectors.records import ALL_TENANTS, SearchFilters, SearchHit, VectorRecord, tenants

try:
    __version__ = version("omnibind")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ALL_TENANTS",
    "AsyncClient",
    "Band",
    "Busy",
    "Client",
    "ConfigError",
    "CorruptMedia",
    "DeleteRequest",
    "InvalidEvent",
    "InvalidKey",
    "LimitExceeded",
    "Modality",
    "Moderation",
    "ModerationSignal",
    "ObjectNotFound",
    "ObjectRef",
    "OmnibindError",
    "PermanentError",
    "QueryEmbedding",
    "QueryFailed",
    "RedisUnavailable",
    "Result",
    "RunStart",
    "SearchFilters",
    "SearchHit",
    "Settings",
    "StatusRecord",
    "StorageUnavailable",
    "SubmitOptions",
    "TransientError",
    "UnsupportedMedia",
    "UploadEvent",
    "UploadStatus",
    "VectorRecord",
    "VectorStoreUnavailable",
    "__version__",
    "get_settings",
    "new_upload_id",
    "parse_upload_event",
    "tenants",
]
