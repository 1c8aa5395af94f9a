"""Production vector store: one Weaviate collection, through weaviate-client v4.

- **Self-provided vectors.** The collection has one vector ("default") with no vectorizer,
  an HNSW index and cosine distance; omnibind sends the (unit-length) ImageBind vectors.
  It is created with explicit properties (`weaviate_schema`); an existing one is checked
  against them when first used (`ConfigError` naming what differs), and properties it
  lacks are added (`weaviate_collection`). Auto-schema is never relied upon: every write
  first reads the schema and re-creates a collection deleted meanwhile. Reads of a deleted
  collection find nothing.
- **Extra vectors of a record** (`VectorRecord.parts`) are named vectors ``part_<name>``
  beside "default", added to the collection when a record first brings that name
  (`weaviate_collection`). A search runs one ``near_vector`` per named vector and keeps each
  upload's best (`best_per_upload`), from a list of named vectors at most
  `parts_refresh_s` old.
- **Idempotent.** Object uuid = `record_uuid(upload_id)`; a batch write with an existing
  uuid replaces that object, so a redelivered index task overwrites instead of duplicating.
  Every per-object error of a batch is checked and raised with the failing upload ids.
- **Tenants** are a filterable property, not Weaviate's native multi-tenancy: one
  collection and one HNSW graph serve every tenant, and a search filters by tenant.
- **One client per process, created lazily** on first use, so that a Celery prefork child
  never inherits its parent's sockets; a forked process (pid changed) opens its own.
  Connecting asks only the server (no PyPI version check) and refuses an unsupported
  server version with a `ConfigError`.
- **Errors** (`weaviate_errors`): connection failures, timeouts, 5xx/429, gRPC
  UNAVAILABLE-like codes and per-object errors that may pass later (a read-only shard) →
  `VectorStoreUnavailable` (retried by the pipeline); an object the server rejects →
  `PermanentError` (``vector_store_rejected``); rejected credentials, a dimension or schema
  mismatch, an unsupported server → `ConfigError`. The API key is a `SecretStr` and only
  unwrapped inside the call that opens the client; it appears in no repr, message or log line.
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

import numpy as np
from pydantic import SecretStr
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.exceptions import WeaviateBaseError, WeaviateInsertManyAllFailedError

from shared.errors import ConfigError, VectorStoreUnavailable
from shared.vectors.properties import PROPERTY_NAMES, properties_to_record, record_to_properties
from shared.vectors.records import MAIN_PART, SearchFilters, SearchHit, VectorRecord, best_per_upload, record_uuid
from shared.vectors.validation import query_vector, records_dimension, unique_by_upload_id
from shared.vectors.weaviate_collection import WeaviateCollection
from shared.vectors.weaviate_errors import (
    CLASS_MISSING,
    CLIENT_ERRORS,
    COLLECTION_HINT,
    all_failed_error,
    batch_failures,
    check_server_version,
    failures_error,
    translate_error,
)
from shared.vectors.weaviate_schema import PART_PREFIX, VECTOR_NAME

if TYPE_CHECKING:
    from weaviate import WeaviateClient
    from weaviate.collections import Collection
    from weaviate.collections.classes.filters import _Filters

    from shared.config import Settings

log = logging.getLogger(__name__)

_COLLECTION_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]*$")
_IDS_PER_DELETE = 1000


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


def build_filter(filters: SearchFilters) -> _Filters | None:
    """`filters` as a Weaviate filter (a conjunction), or None only for `ALL_TENANTS`
    without other filters."""
    terms: list[_Filters] = []
    scoped = filters.scoped_tenants
    if scoped is not None:
        equalities = [Filter.by_property("tenant").equal(name) for name in sorted(scoped)]
        terms.append(equalities[0] if len(equalities) == 1 else Filter.any_of(equalities))
    if filters.modality is not None:
        terms.append(Filter.by_property("modality").equal(str(filters.modality.value)))
    if filters.flagged is not None:
        terms.append(Filter.by_property("flagged").equal(bool(filters.flagged)))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else Filter.all_of(terms)


def to_weaviate_properties(record: VectorRecord) -> dict[str, Any]:
    """`record`'s properties as Weaviate takes them: unset values left out (stored as null)."""
    return {name: value for name, value in record_to_properties(record).items() if value is not None}


def to_data_object(record: VectorRecord) -> DataObject[dict[str, Any], None]:
    """The object written for `record`: its deterministic uuid, properties and named vectors."""
    # By name: every server with named vectors takes this form, while mapping a bare
    # vector onto the only named one is a late addition (Weaviate PR 6045).
    vectors = {VECTOR_NAME: np.asarray(record.vector, dtype=np.float32).tolist()}
    for name, part in record.parts.items():
        vectors[PART_PREFIX + name] = np.asarray(part, dtype=np.float32).tolist()
    return DataObject(properties=to_weaviate_properties(record), uuid=record.uuid, vector=vectors)


def from_weaviate_object(properties: Mapping[str, Any], vector: Any) -> VectorRecord:
    """A record from a returned object's properties and its ``vector`` (a dict by vector name)."""
    array = vector_of(vector)
    if array is None:
        raise VectorStoreUnavailable(f"Weaviate returned {properties.get('upload_id')!r} without its vector")
    parts = {}
    if isinstance(vector, Mapping):
        parts = {
            str(name).removeprefix(PART_PREFIX): np.asarray(value, dtype=np.float32)
            for name, value in vector.items()
            if str(name).startswith(PART_PREFIX) and value is not None and len(value)
        }
    return properties_to_record(properties, array, parts)


def vector_of(vector: Any) -> np.ndarray | None:
    """The omnibind vector out of a returned object's ``vector`` field (named vectors: a dict)."""
    if isinstance(vector, Mapping):
        vector = vector.get(VECTOR_NAME) if VECTOR_NAME in vector else next(iter(vector.values()), None)
    if vector is None or len(vector) == 0:
        return None
    return np.asarray(vector, dtype=np.float32)


class CollectionGone(VectorStoreUnavailable):
    """The collection was deleted under the store: reads find nothing; a write retried re-creates it."""


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
        parts_refresh_s: float = 5.0,
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
        self._schema = WeaviateCollection(
            collection, self._client, describe=self._describe(), parts_refresh_s=parts_refresh_s
        )

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

    @property
    def parts_refresh_s(self) -> float:
        """How old the list of part vectors a search uses may be (`WeaviateCollection`)."""
        return self._schema.parts_refresh_s

    @parts_refresh_s.setter
    def parts_refresh_s(self, seconds: float) -> None:
        self._schema.parts_refresh_s = seconds

    # -- the VectorStore port --------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace `records` by uuid in batches; raise if any object failed.

        Before each batch the collection's schema is read again (one small request), so that a
        collection deleted meanwhile is re-created with the explicit schema before the write,
        never inferred by Weaviate's auto-schema from the objects. Not atomic across objects
        (Weaviate has no transactions): after an error some objects may be written; writing
        the same records again is safe (idempotent).
        """
        if not records:
            return
        batch = unique_by_upload_id(records)
        collection = self._collection(create=True)
        assert collection is not None
        dim = records_dimension(batch, self._store_dimension(collection), store=self._describe(), hint=COLLECTION_HINT)
        self._schema.ensure_part_vectors({name for record in batch for name in record.parts})
        for start in range(0, len(batch), self._batch_size):
            if start:
                collection = self._collection(create=True)
                assert collection is not None
            self._write(collection, batch[start : start + self._batch_size])
        # The store now holds vectors of this dimension (it was checked against any stored one).
        self._dimension = dim
        self._dimension_checked = True

    def get(self, upload_id: str) -> VectorRecord | None:
        collection = self._collection(create=False)
        obj = None
        with contextlib.suppress(CollectionGone), self._translated("get"):
            if collection is not None:
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
        with contextlib.suppress(CollectionGone):
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

    def search(self, vector: np.ndarray, *, k: int = 10, filters: SearchFilters) -> list[SearchHit]:
        """The `k` nearest records (HNSW, cosine; score = 1 - distance), best first, filtered
        before ranking."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        collection = self._collection(create=False)
        hits: list[SearchHit] = []
        with contextlib.suppress(CollectionGone):
            if collection is not None:
                targets = [MAIN_PART] if filters.parts is None or MAIN_PART in filters.parts else []
                targets += sorted(
                    name for name in self._schema.recent_parts() if filters.parts is None or name in filters.parts
                )
                for part in targets:
                    hits += self._search(collection, vector, k, filters, part)
                if len(targets) > 1:
                    hits = best_per_upload(hits, k)
        return hits

    def count(self, filters: SearchFilters) -> int:
        collection = self._collection(create=False)
        total = 0
        with contextlib.suppress(CollectionGone), self._translated("count"):
            if collection is not None:
                result = collection.aggregate.over_all(total_count=True, filters=build_filter(filters))
                total = int(result.total_count or 0)
        return total

    def iter_records(self, batch_size: int = 256) -> Iterator[VectorRecord]:
        """Every record, vectors included (cursor over uuids; writes made meanwhile may or may
        not be seen)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        collection = self._collection(create=False)
        if collection is None:
            return
        with contextlib.suppress(CollectionGone), self._translated("iterate"):
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
            self._schema.ready = False
        if client is not None and owner == os.getpid():
            with contextlib.suppress(WeaviateBaseError, OSError):
                client.close()

    # -- internals -----------------------------------------------------------------------

    def _client(self) -> WeaviateClient:
        with self._guard:
            if self._client_obj is None or self._pid != os.getpid():
                self._client_obj = self._connect()
                self._pid = os.getpid()
                self._schema.ready = False
            return self._client_obj

    def _connect(self) -> WeaviateClient:
        """A connected client, after checking the server's version. ``skip_init_checks``: the
        client's own start-up checks would ask pypi.org for its latest version (a request to
        the internet on every connect, which many hosts cannot make) and ping gRPC (the
        first gRPC call tells us as much). It still reads ``/v1/meta``, refusing servers
        older than it supports; we refuse the versions omnibind does not support."""
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
                skip_init_checks=True,
            )
        except WeaviateBaseError as exc:
            raise translate_error(exc, f"connect to {endpoint}") from exc
        except ValueError as exc:  # the client could not parse the server's version
            raise ConfigError(f"Weaviate at {endpoint} reports a version weaviate-client cannot read: {exc}") from exc
        try:
            with self._translated("read the server version"):
                version = str(client.get_meta().get("version", ""))
            check_server_version(version, str(endpoint))
        except Exception:
            client.close()
            raise
        log.info("connected to Weaviate %s at %s (collection %s)", version, endpoint, self._name)
        return client

    def _collection(self, *, create: bool) -> Collection[Any, Any] | None:
        """The collection, its schema checked, created first if `create`; None if it does not
        exist. Reads check the schema once per client; writes every time (see `upsert`)."""
        client = self._client()
        if not self._schema.prepare(create=create, on_create=self._forget_dimension):
            return None
        return client.collections.use(self._name)

    def _forget_dimension(self) -> None:
        """Before (re-)creating the collection: whatever is stored from now on is new."""
        if self._dimension_checked:
            log.warning("Weaviate collection %s has disappeared (deleted?); re-creating it", self._name)
            self._dimension_checked = False

    def _write(self, collection: Collection[Any, Any], chunk: Sequence[VectorRecord]) -> None:
        upload_ids = [record.upload_id for record in chunk]
        try:
            result = collection.data.insert_many([to_data_object(record) for record in chunk])
        except WeaviateInsertManyAllFailedError as exc:
            raise all_failed_error(exc, upload_ids, self._name) from exc
        except CLIENT_ERRORS as exc:
            raise translate_error(exc, f"batch write ({self._name})") from exc
        failures = batch_failures(result, upload_ids)
        if failures:
            raise failures_error(failures, len(chunk), self._name)

    def _search(
        self, collection: Collection[Any, Any], vector: np.ndarray, k: int, filters: SearchFilters, part: str
    ) -> list[SearchHit]:
        query = query_vector(vector, self._store_dimension(collection), store=self._describe(), hint=COLLECTION_HINT)
        with self._translated("search"):
            response = collection.query.near_vector(
                near_vector=query.tolist(),
                limit=k,
                target_vector=VECTOR_NAME if part == MAIN_PART else PART_PREFIX + part,
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
            hits.append(SearchHit(from_weaviate_object(obj.properties, obj.vector), 1.0 - float(distance), part))
        return hits

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
                f"{self._dimension} is configured; {COLLECTION_HINT}"
            )
        self._dimension = int(stored.shape[0])
        self._dimension_checked = True
        return self._dimension

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except CLIENT_ERRORS as exc:
            if CLASS_MISSING.search(str(exc)):
                self._schema.ready = False
                raise CollectionGone(f"{self._describe()} does not exist (deleted?): {action} found nothing") from exc
            raise translate_error(exc, f"{action} ({self._name})") from exc

    def _describe(self) -> str:
        return f"Weaviate collection {self._name!r} at {self._endpoint}"
