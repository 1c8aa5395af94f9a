"""Production vector store: one Weaviate collection, through weaviate-client v4.

- **Self-provided vectors.** The collection has one vector ("default") with no vectorizer,
  an HNSW index and cosine distance; omnibind sends the (unit-length) ImageBind vectors.
  It is created on first use with explicit properties (`shared.vectors.properties`; text
  properties used as filters are ``field``-tokenised so that ``tenant == "acme"`` never
  matches ``"acme corp"``). Auto-schema is never relied upon. Two workers creating it at
  once is fine: the loser sees "already exists" and uses the winner's.
- **Idempotent.** Object uuid = `record_uuid(upload_id)`; a batch write with an existing
  uuid replaces that object, so a redelivered index task overwrites instead of duplicating.
  Every per-object error of a batch is checked and raised with the failing upload ids.
- **Tenants** are a filterable property, not Weaviate's native multi-tenancy: one
  collection and one HNSW graph serve every tenant, and a search filters by tenant.
- **One client per process, created lazily** on first use, so that a Celery prefork child
  never inherits its parent's sockets; a forked process (pid changed) opens its own.
- **Errors.** Connection failures, timeouts, 5xx/429 and gRPC UNAVAILABLE-like codes →
  `VectorStoreUnavailable` (retried by the pipeline); rejected credentials, a dimension or
  schema mismatch → `ConfigError`. The API key is a `SecretStr` and only unwrapped inside
  the call that opens the client; it appears in no repr, message or log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc
import httpx
import numpy as np
from pydantic import SecretStr
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.exceptions import (
    AuthenticationFailedError,
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateInvalidInputError,
)

from shared.errors import ConfigError, OmnibindError, PermanentError, VectorStoreUnavailable
from shared.vectors.properties import PROPERTIES, PROPERTY_NAMES, Kind, properties_to_record, record_to_properties
from shared.vectors.records import SearchFilters, SearchHit, VectorRecord, record_uuid
from shared.vectors.validation import query_vector, records_dimension, unique_by_upload_id

if TYPE_CHECKING:
    from weaviate import WeaviateClient
    from weaviate.collections import Collection
    from weaviate.collections.classes.batch import BatchObjectReturn
    from weaviate.collections.classes.filters import _Filters

    from shared.config import Settings

log = logging.getLogger(__name__)

VECTOR_NAME = "default"
_COLLECTION_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]*$")
# Weaviate phrases a dimension mismatch in several ways across versions.
_DIMENSION_MISMATCH = re.compile(r"vector lengths? don.?t match|has a vector with length|vector length", re.I)
# gRPC status codes (grpc.StatusCode values) that mean "try again later".
_TRANSIENT_GRPC_CODES = frozenset({4, 8, 10, 14})  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE
_IDS_PER_DELETE = 1000
# What the client lets escape: its own errors and, rarely, raw transport errors.
_CLIENT_ERRORS = (WeaviateBaseError, httpx.HTTPError, grpc.RpcError)
_ERRORS_SHOWN = 10

_DATA_TYPES: dict[Kind, DataType] = {
    Kind.TEXT: DataType.TEXT,
    Kind.TEXT_LIST: DataType.TEXT_ARRAY,
    Kind.INT: DataType.INT,
    Kind.BOOL: DataType.BOOL,
    Kind.DATE: DataType.DATE,
    Kind.JSON: DataType.TEXT,
}


@dataclass(frozen=True, slots=True)
class WeaviateEndpoint:
    http_host: str
    http_port: int
    http_secure: bool
    grpc_host: str
    grpc_port: int
    grpc_secure: bool

    def __str__(self) -> str:
        scheme = "https" if self.http_secure else "http"
        return f"{scheme}://{self.http_host}:{self.http_port} (gRPC {self.grpc_host}:{self.grpc_port})"


@dataclass(frozen=True, slots=True)
class WeaviateTimeouts:
    init_s: float = 5.0
    query_s: float = 30.0
    insert_s: float = 90.0


def parse_endpoint(
    url: str, *, grpc_host: str | None = None, grpc_port: int = 50051, grpc_secure: bool | None = None
) -> WeaviateEndpoint:
    """Where Weaviate listens, from its HTTP URL (``http://weaviate:8080``) and gRPC port.

    gRPC defaults to the URL's host and to TLS exactly when the URL is https. Raises
    `ConfigError` for a URL that is not plain http(s)://host[:port].
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"OMNIBIND_VECTORS__URL must look like http://host:8080, got {url!r}")
    if parts.username or parts.password:
        raise ConfigError("OMNIBIND_VECTORS__URL must not carry credentials; set OMNIBIND_VECTORS__API_KEY")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"OMNIBIND_VECTORS__URL must be scheme://host[:port] only, got {url!r}")
    secure = parts.scheme == "https"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise ConfigError(f"OMNIBIND_VECTORS__URL has an invalid port: {url!r}") from exc
    return WeaviateEndpoint(
        http_host=parts.hostname,
        http_port=port,
        http_secure=secure,
        grpc_host=grpc_host or parts.hostname,
        grpc_port=grpc_port,
        grpc_secure=secure if grpc_secure is None else grpc_secure,
    )


def collection_properties() -> list[Property]:
    """Explicit Weaviate properties for `PROPERTIES` (nothing left to auto-schema)."""
    properties = []
    for spec in PROPERTIES:
        data_type = _DATA_TYPES[spec.kind]
        text = data_type in (DataType.TEXT, DataType.TEXT_ARRAY)
        properties.append(
            Property(
                name=spec.name,
                data_type=data_type,
                description=spec.description or None,
                index_filterable=spec.filterable,
                # Exact-match filters only; no BM25 (that would need an index we don't use).
                index_searchable=False if text else None,
                tokenization=Tokenization.FIELD if text and spec.filterable else None,
            )
        )
    return properties


def collection_config(name: str) -> dict[str, Any]:
    """Keyword arguments for ``client.collections.create``: self-provided vectors, HNSW, cosine."""
    return {
        "name": name,
        "description": "omnibind: one ImageBind embedding per upload (vectors provided by omnibind)",
        "properties": collection_properties(),
        "vector_config": Configure.Vectors.self_provided(
            name=VECTOR_NAME,
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
        ),
    }


def build_filter(filters: SearchFilters | None) -> _Filters | None:
    """`filters` as a Weaviate filter (a conjunction), or None for "everything"."""
    if filters is None:
        return None
    terms: list[_Filters] = []
    if filters.modality is not None:
        terms.append(Filter.by_property("modality").equal(str(filters.modality.value)))
    if filters.flagged is not None:
        terms.append(Filter.by_property("flagged").equal(bool(filters.flagged)))
    if filters.tenant is not None:
        terms.append(Filter.by_property("tenant").equal(filters.tenant))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else Filter.all_of(terms)


def to_weaviate_properties(record: VectorRecord) -> dict[str, Any]:
    """`record`'s properties as Weaviate takes them: unset values left out (stored as null)."""
    return {name: value for name, value in record_to_properties(record).items() if value is not None}


def to_data_object(record: VectorRecord) -> DataObject[dict[str, Any], None]:
    """The object written for `record`: its deterministic uuid, properties and named vector."""
    return DataObject(
        properties=to_weaviate_properties(record),
        uuid=record.uuid,
        # By name: every server with named vectors takes this form, while mapping a bare
        # vector onto the only named one is a late addition (Weaviate PR 6045).
        vector={VECTOR_NAME: np.asarray(record.vector, dtype=np.float32).tolist()},
    )


def from_weaviate_object(properties: Mapping[str, Any], vector: Any) -> VectorRecord:
    """A record from a returned object's properties and its ``vector`` (a dict by vector name)."""
    array = vector_of(vector)
    if array is None:
        raise VectorStoreUnavailable(f"Weaviate returned {properties.get('upload_id')!r} without its vector")
    return properties_to_record(properties, array)


def vector_of(vector: Any) -> np.ndarray | None:
    """The omnibind vector out of a returned object's ``vector`` field (named vectors: a dict)."""
    if isinstance(vector, Mapping):
        vector = vector.get(VECTOR_NAME) if VECTOR_NAME in vector else next(iter(vector.values()), None)
    if vector is None or len(vector) == 0:
        return None
    return np.asarray(vector, dtype=np.float32)


def translate_error(exc: Exception, action: str) -> OmnibindError:
    """The omnibind error for a weaviate-client (or transport) exception raised during `action`."""
    text = f"Weaviate {action} failed: {exc}"
    if isinstance(exc, AuthenticationFailedError | InsufficientPermissionsError):
        return ConfigError(f"{text} (check OMNIBIND_VECTORS__API_KEY)")
    if _DIMENSION_MISMATCH.search(str(exc)):
        return ConfigError(
            f"{text}; vectors of different models cannot share a collection (OMNIBIND_VECTORS__COLLECTION)"
        )
    if isinstance(exc, UnexpectedStatusCodeError):
        code = exc.status_code
        if code in (401, 403):
            return ConfigError(f"{text} (check OMNIBIND_VECTORS__API_KEY)")
        if code >= 500 or code in (408, 429) or code in _TRANSIENT_GRPC_CODES:
            return VectorStoreUnavailable(text)
        if 400 <= code < 500:
            # Weaviate refused the request itself: the collection does not have the schema
            # omnibind expects (someone else created it) or the server is too old.
            return ConfigError(text)
        return VectorStoreUnavailable(text)
    if isinstance(exc, WeaviateInvalidInputError):
        return PermanentError(text, reason="invalid_record")
    # Connection refused, start-up checks, timeouts, closed client, retries exhausted, gRPC
    # query/batch errors: all "the store is not answering right now".
    return VectorStoreUnavailable(text)


def batch_failures(result: BatchObjectReturn, upload_ids: Sequence[str]) -> dict[str, str]:
    """Failed upload id -> Weaviate's message, from a batch result (indices are batch positions)."""
    return {upload_ids[index]: error.message for index, error in sorted(result.errors.items())}


def failures_error(failures: Mapping[str, str], total: int, collection: str) -> OmnibindError:
    shown = "; ".join(f"{upload_id}: {message}" for upload_id, message in list(failures.items())[:_ERRORS_SHOWN])
    more = f" (and {len(failures) - _ERRORS_SHOWN} more)" if len(failures) > _ERRORS_SHOWN else ""
    text = f"Weaviate rejected {len(failures)} of {total} objects written to {collection}: {shown}{more}"
    if any(_DIMENSION_MISMATCH.search(message) for message in failures.values()):
        return ConfigError(text)
    return VectorStoreUnavailable(text)


class WeaviateVectorStore:
    """`VectorStore` on one Weaviate collection (see the module docstring).

    Opens nothing in the constructor. Raises, from any method: `VectorStoreUnavailable`
    when Weaviate cannot be reached or answers with a server error, `ConfigError` when it
    rejects the credentials or the collection/dimension does not fit.
    """

    def __init__(
        self,
        endpoint: WeaviateEndpoint,
        *,
        api_key: SecretStr | None = None,
        collection: str = "OmnibindUpload",
        dimension: int | None = None,
        timeouts: WeaviateTimeouts | None = None,
        batch_size: int = 256,
    ) -> None:
        if not _COLLECTION_NAME.match(collection):
            raise ConfigError(
                f"Weaviate collection name {collection!r} must start with an upper-case letter "
                "and contain only letters, digits and '_'"
            )
        self._endpoint = endpoint
        self._api_key = api_key
        self._name = collection
        self._dimension = dimension
        self._dimension_checked = False
        self._timeouts = timeouts or WeaviateTimeouts()
        self._batch_size = batch_size
        self._guard = threading.Lock()
        self._pid: int | None = None
        self._client_obj: WeaviateClient | None = None
        self._collection_ready = False

    @classmethod
    def from_settings(cls, settings: Settings, *, dimension: int | None = None) -> WeaviateVectorStore:
        vectors = settings.vectors
        if not vectors.url:
            raise ConfigError("the weaviate vector backend needs OMNIBIND_VECTORS__URL (e.g. http://weaviate:8080)")
        endpoint = parse_endpoint(
            vectors.url, grpc_host=vectors.grpc_host, grpc_port=vectors.grpc_port, grpc_secure=vectors.grpc_secure
        )
        return cls(
            endpoint,
            api_key=vectors.api_key,
            collection=vectors.collection,
            dimension=dimension or vectors.dimension,
            timeouts=WeaviateTimeouts(
                init_s=vectors.timeout_init_s, query_s=vectors.timeout_query_s, insert_s=vectors.timeout_insert_s
            ),
        )

    def __repr__(self) -> str:
        auth = "api-key" if self._api_key is not None else "anonymous"
        return f"WeaviateVectorStore(endpoint='{self._endpoint}', collection={self._name!r}, auth={auth})"

    @property
    def collection_name(self) -> str:
        return self._name

    # -- the VectorStore port --------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace `records` by uuid in batches; raise if any object failed.

        Not atomic across objects (Weaviate has no transactions): after an error some
        objects may be written; writing the same records again is safe (idempotent).
        """
        if not records:
            return
        batch = unique_by_upload_id(records)
        collection = self._collection(create=True)
        assert collection is not None
        dim = records_dimension(batch, self._store_dimension(collection), store=self._describe(), hint=self._hint())
        for start in range(0, len(batch), self._batch_size):
            chunk = batch[start : start + self._batch_size]
            objects = [to_data_object(record) for record in chunk]
            with self._translated("batch write"):
                result = collection.data.insert_many(objects)
            failures = batch_failures(result, [record.upload_id for record in chunk])
            if failures:
                raise failures_error(failures, len(chunk), self._name)
        # The store now holds vectors of this dimension (it was checked against any stored one).
        self._dimension = dim
        self._dimension_checked = True

    def get(self, upload_id: str) -> VectorRecord | None:
        collection = self._collection(create=False)
        if collection is None:
            return None
        with self._translated("get"):
            obj = collection.query.fetch_object_by_id(
                record_uuid(upload_id), include_vector=True, return_properties=list(PROPERTY_NAMES)
            )
        return None if obj is None else from_weaviate_object(obj.properties, obj.vector)

    def delete(self, upload_ids: Sequence[str]) -> int:
        """Delete the records of `upload_ids`; returns how many existed."""
        ids = list(dict.fromkeys(upload_ids))
        collection = self._collection(create=False)
        if not ids or collection is None:
            return 0
        deleted = 0
        for start in range(0, len(ids), _IDS_PER_DELETE):
            chunk = ids[start : start + _IDS_PER_DELETE]
            where = Filter.by_id().contains_any([record_uuid(upload_id) for upload_id in chunk])
            with self._translated("delete"):
                result = collection.data.delete_many(where=where)
            if result.failed:
                raise VectorStoreUnavailable(
                    f"Weaviate failed to delete {result.failed} of {result.matches} objects from {self._name}"
                )
            deleted += int(result.successful)
        return deleted

    def search(self, vector: np.ndarray, *, k: int = 10, filters: SearchFilters | None = None) -> list[SearchHit]:
        """The `k` nearest records (HNSW, cosine; score = 1 - distance), best first, filtered
        before ranking."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        collection = self._collection(create=False)
        if collection is None:
            return []
        query = query_vector(vector, self._store_dimension(collection), store=self._describe(), hint=self._hint())
        with self._translated("search"):
            response = collection.query.near_vector(
                near_vector=query.tolist(),
                limit=k,
                target_vector=VECTOR_NAME,
                filters=build_filter(filters),
                include_vector=True,
                return_properties=list(PROPERTY_NAMES),
                return_metadata=MetadataQuery(distance=True),
            )
        hits = []
        for obj in response.objects:
            distance = obj.metadata.distance if obj.metadata is not None else None
            if distance is None:
                raise VectorStoreUnavailable(f"Weaviate returned a search hit without its distance from {self._name}")
            hits.append(SearchHit(from_weaviate_object(obj.properties, obj.vector), 1.0 - float(distance)))
        return hits

    def count(self, filters: SearchFilters | None = None) -> int:
        collection = self._collection(create=False)
        if collection is None:
            return 0
        with self._translated("count"):
            result = collection.aggregate.over_all(total_count=True, filters=build_filter(filters))
        return int(result.total_count or 0)

    def iter_records(self, batch_size: int = 256) -> Iterator[VectorRecord]:
        """Every record, vectors included (cursor over uuids; writes made meanwhile may or may
        not be seen)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        collection = self._collection(create=False)
        if collection is None:
            return
        with self._translated("iterate"):
            for obj in collection.iterator(
                include_vector=True, return_properties=list(PROPERTY_NAMES), cache_size=batch_size
            ):
                yield from_weaviate_object(obj.properties, obj.vector)

    def close(self) -> None:
        """Close this process's client (a client inherited through fork is dropped, not closed)."""
        with self._guard:
            client, owner = self._client_obj, self._pid
            self._client_obj = None
            self._pid = None
            self._collection_ready = False
        if client is not None and owner == os.getpid():
            with contextlib.suppress(WeaviateBaseError, OSError):
                client.close()

    # -- internals -----------------------------------------------------------------------

    def _client(self) -> WeaviateClient:
        with self._guard:
            if self._client_obj is None or self._pid != os.getpid():
                self._client_obj = self._connect()
                self._pid = os.getpid()
                self._collection_ready = False
            return self._client_obj

    def _connect(self) -> WeaviateClient:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        endpoint = self._endpoint
        # Unwrapped here only, passed straight to the client, never stored or logged.
        auth = Auth.api_key(self._api_key.get_secret_value()) if self._api_key is not None else None
        timeouts = self._timeouts
        try:
            client = weaviate.connect_to_custom(
                http_host=endpoint.http_host,
                http_port=endpoint.http_port,
                http_secure=endpoint.http_secure,
                grpc_host=endpoint.grpc_host,
                grpc_port=endpoint.grpc_port,
                grpc_secure=endpoint.grpc_secure,
                auth_credentials=auth,
                additional_config=AdditionalConfig(
                    timeout=Timeout(init=timeouts.init_s, query=timeouts.query_s, insert=timeouts.insert_s)
                ),
            )
        except WeaviateBaseError as exc:
            raise translate_error(exc, f"connect to {endpoint}") from exc
        log.info("connected to Weaviate at %s (collection %s)", endpoint, self._name)
        return client

    def _collection(self, *, create: bool) -> Collection[Any, Any] | None:
        """The collection, created first if `create`; None if it does not exist (yet)."""
        client = self._client()
        if not self._collection_ready:
            with self._translated("read the schema"):
                exists = client.collections.exists(self._name)
            if not exists:
                if not create:
                    return None
                self._create_collection(client)
            self._collection_ready = True
        return client.collections.use(self._name)

    def _create_collection(self, client: WeaviateClient) -> None:
        try:
            client.collections.create(**collection_config(self._name))
        except UnexpectedStatusCodeError as exc:
            # Another worker created it between our check and our create: use theirs.
            if exc.status_code == 422 and "already exists" in str(exc):
                log.info("collection %s was created concurrently by another worker", self._name)
                return
            raise translate_error(exc, f"create collection {self._name}") from exc
        except WeaviateBaseError as exc:
            raise translate_error(exc, f"create collection {self._name}") from exc
        log.info("created Weaviate collection %s (self-provided vectors, HNSW, cosine)", self._name)

    def _store_dimension(self, collection: Collection[Any, Any]) -> int | None:
        """The dimension of the vectors stored: read from any stored object, checked against
        the configured one. None while the collection is empty and nothing is configured."""
        if self._dimension_checked:
            return self._dimension
        with self._translated("read a stored vector"):
            sample = collection.query.fetch_objects(limit=1, include_vector=True, return_properties=["upload_id"])
        stored = vector_of(sample.objects[0].vector) if sample.objects else None
        if stored is None:
            return self._dimension
        if self._dimension is not None and self._dimension != stored.shape[0]:
            raise ConfigError(
                f"{self._describe()} holds vectors of dimension {stored.shape[0]}, but dimension "
                f"{self._dimension} is configured; {self._hint()}"
            )
        self._dimension = int(stored.shape[0])
        self._dimension_checked = True
        return self._dimension

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except _CLIENT_ERRORS as exc:
            raise translate_error(exc, f"{action} ({self._name})") from exc

    def _describe(self) -> str:
        return f"Weaviate collection {self._name!r} at {self._endpoint}"

    def _hint(self) -> str:
        return "use another collection (OMNIBIND_VECTORS__COLLECTION)"
