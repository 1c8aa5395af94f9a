"""The Weaviate adapter against a live server: what it checks and refuses when it connects and
opens its collection, how it classifies the server's real rejections, a collection deleted
under it, and several processes on one collection. (The shared contract is test_contract.py.)"""

from __future__ import annotations

import json
import multiprocessing
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from weaviate import WeaviateClient
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.collections.classes.config import CollectionConfig
from weaviate.exceptions import WeaviateBaseError

from shared.errors import ConfigError, PermanentError, VectorStoreUnavailable
from shared.events import Modality
from shared.vectors.properties import PROPERTIES, PROPERTY_NAMES
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord
from shared.vectors.weaviate import WeaviateVectorStore, parse_endpoint
from shared.vectors.weaviate_errors import batch_failures, failures_error, translate_error
from shared.vectors.weaviate_schema import VECTOR_NAME, collection_config, collection_properties
from tests.support.weaviate_server import WeaviateAddress

from .conftest import TEST_DIM, drop_weaviate_collections, unit_vector

pytestmark = pytest.mark.weaviate

RecordFactory = Callable[..., VectorRecord]
StoreOpener = Callable[..., WeaviateVectorStore]


# -- fixtures ----------------------------------------------------------------------------------


def open_weaviate_store(url: str, grpc_port: int, api_key: str | None, collection: str) -> WeaviateVectorStore:
    return WeaviateVectorStore(
        parse_endpoint(url, grpc_port=grpc_port),
        api_key=SecretStr(api_key) if api_key else None,
        collection=collection,
    )


@pytest.fixture
def prefix(weaviate: WeaviateAddress) -> Iterator[str]:
    """A collection-name prefix of this test's own; its collections are dropped afterwards."""
    value = f"OmnibindLive{uuid.uuid4().hex[:12]}"
    yield value
    drop_weaviate_collections(weaviate, value)


@pytest.fixture
def open_store(weaviate: WeaviateAddress, prefix: str) -> Iterator[StoreOpener]:
    """``open_store(name="A", url=None)``: a store on collection prefix+name (closed afterwards)."""
    opened: list[WeaviateVectorStore] = []

    def factory(name: str = "A", *, url: str | None = None) -> WeaviateVectorStore:
        store = open_weaviate_store(url or weaviate.url, weaviate.grpc_port, weaviate.api_key, prefix + name)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def raw(weaviate: WeaviateAddress) -> Iterator[WeaviateClient]:
    """A plain weaviate-client on the live server: what an operator (or another program) uses."""
    import weaviate as weaviate_client
    from weaviate.classes.init import Auth

    endpoint = parse_endpoint(weaviate.url, grpc_port=weaviate.grpc_port)
    client = weaviate_client.connect_to_custom(
        http_host=endpoint.http_host,
        http_port=endpoint.http_port,
        http_secure=False,
        grpc_host=endpoint.grpc_host,
        grpc_port=endpoint.grpc_port,
        grpc_secure=False,
        auth_credentials=Auth.api_key(weaviate.api_key) if weaviate.api_key else None,
        skip_init_checks=True,
    )
    yield client
    client.close()


def assert_has_our_schema(config: CollectionConfig) -> None:
    """`config` is what `collection_config` creates: one self-provided cosine vector and every
    record property with its data type (the store's own check is what the other tests pin)."""
    assert config.vector_config is not None and set(config.vector_config) == {VECTOR_NAME}
    named = config.vector_config[VECTOR_NAME]
    assert named.vectorizer.vectorizer == "none"
    assert named.vector_index_config.distance_metric == VectorDistances.COSINE
    assert config.vectorizer is None and config.vector_index_config is None
    declared = {prop.name: prop for prop in config.properties}
    assert set(PROPERTY_NAMES) <= set(declared)
    for wanted in collection_properties():
        got = declared[wanted.name]
        assert got.data_type == wanted.dataType, wanted.name
        if wanted.tokenization is not None:
            assert got.tokenization == wanted.tokenization, wanted.name
        assert got.index_filterable is (wanted.indexFilterable is not False), wanted.name


# -- a loopback stand-in for another server version and for the internet ------------------------


class _MetaRewritingProxy:
    """An HTTP proxy on loopback in front of the live server's REST port that forwards every
    request and changes one thing: the ``version`` field of ``/v1/meta`` answers. (gRPC still
    goes straight to the live server.)"""

    def __init__(self, upstream: str, version: str) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                skipped = {"host", "content-length", "connection", "accept-encoding"}
                headers = {key: value for key, value in self.headers.items() if key.lower() not in skipped}
                answer = httpx.request(self.command, upstream + self.path, headers=headers, content=body)
                content = answer.content
                if self.path.split("?")[0].rstrip("/") == "/v1/meta" and answer.status_code == 200:
                    content = json.dumps({**answer.json(), "version": proxy.version}).encode()
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is not the place for an access log

        self.version = version
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server_reporting(weaviate: WeaviateAddress) -> Iterator[Callable[[str], str]]:
    """``server_reporting("1.20.0") -> url``: the live server, announcing another version."""
    proxies: list[_MetaRewritingProxy] = []

    def factory(version: str) -> str:
        proxies.append(_MetaRewritingProxy(weaviate.url, version))
        return proxies[-1].url

    yield factory
    for proxy in proxies:
        proxy.close()


class _OutsideWorld:
    """A loopback listener standing in for every host beyond the Weaviate server: set as the
    process's HTTP(S) proxy, it records the first line of each connection made to it (an
    HTTPS request shows as ``CONNECT pypi.org:443``) and hangs up."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            with connection:
                connection.settimeout(5)
                try:
                    self.requests.append(connection.recv(4096).decode(errors="replace").split("\r\n")[0])
                except OSError as exc:
                    self.requests.append(f"<connection without a request: {exc}>")

    def close(self) -> None:
        self._socket.close()


# -- 1. server versions -------------------------------------------------------------------------


def test_the_live_server_version_is_supported(open_store: StoreOpener) -> None:
    assert open_store().count(SearchFilters(scope=ALL_TENANTS)) == 0


@pytest.mark.parametrize("version", ["1.20.0", "1.26.9"])
def test_a_server_older_than_supported_is_a_config_error_naming_the_supported_versions(
    open_store: StoreOpener, server_reporting: Callable[[str], str], version: str
) -> None:
    store = open_store(url=server_reporting(version))
    with pytest.raises(ConfigError) as caught:
        store.count(SearchFilters(scope=ALL_TENANTS))
    message = str(caught.value)
    assert version in message and "1.27.0" in message and "OMNIBIND_VECTORS__URL" in message


def test_a_server_of_another_major_version_is_a_config_error(
    open_store: StoreOpener, server_reporting: Callable[[str], str], make_record: RecordFactory
) -> None:
    store = open_store(url=server_reporting("2.0.0"))
    with pytest.raises(ConfigError, match=r"2\.0\.0.*1\.x"):
        store.upsert([make_record()])


# -- 2. no request beyond the server -----------------------------------------------------------


def test_connecting_makes_no_request_beyond_the_weaviate_server(
    open_store: StoreOpener, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = _OutsideWorld()
    try:
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, outside.url)
            monkeypatch.setenv(name.lower(), outside.url)
        # The Weaviate server is on loopback: only a request to any other host reaches "outside".
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        store = open_store()
        store.upsert([make_record("first")])
        assert store.count(SearchFilters(scope=ALL_TENANTS)) == 1
    finally:
        outside.close()
    assert outside.requests == []


# -- 3. the server's rejections ---------------------------------------------------------------


def _rejection(raw: WeaviateClient, collection: str, properties: dict[str, Any], vector: list[float]) -> Any:
    """Write one bad object beside a good one; returns the server's per-object answer."""
    good = DataObject(
        properties={"upload_id": "good", "modality": "image"},
        uuid=uuid.uuid4(),
        vector={VECTOR_NAME: unit_vector("good").tolist()},
    )
    bad = DataObject(properties={"upload_id": "bad", **properties}, uuid=uuid.uuid4(), vector={VECTOR_NAME: vector})
    return raw.collections.use(collection).data.insert_many([bad, good])


REJECTED_VALUES = {
    "integer": {"size": "abc"},
    "date": {"created_at": "yesterday"},
    "boolean": {"flagged": "maybe"},
    "text": {"tenant": 7},
    "text array": {"categories": [1, 2]},
}


@pytest.mark.parametrize("properties", REJECTED_VALUES.values(), ids=REJECTED_VALUES.keys())
def test_a_property_value_the_server_rejects_is_a_permanent_error(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory, properties: dict[str, Any]
) -> None:
    store = open_store()
    store.upsert([make_record("seed")])
    result = _rejection(raw, store.collection_name, properties, unit_vector("bad").tolist())
    failures = batch_failures(result, ["bad", "good"])
    assert list(failures) == ["bad"]
    error = failures_error(failures, 2, store.collection_name)
    assert type(error) is PermanentError and error.reason == "vector_store_rejected"
    assert "bad: invalid" in str(error)


def test_an_object_of_another_dimension_is_a_config_error(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    store.upsert([make_record("seed")])
    result = _rejection(raw, store.collection_name, {}, unit_vector("bad", TEST_DIM // 2).tolist())
    error = failures_error(batch_failures(result, ["bad", "good"]), 2, store.collection_name)
    assert isinstance(error, ConfigError) and "OMNIBIND_VECTORS__COLLECTION" in str(error)


def test_a_batch_whose_every_object_is_rejected_is_a_permanent_error(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    store.upsert([make_record("seed")])
    bad = DataObject(properties={"upload_id": "bad", "size": "abc"}, vector={VECTOR_NAME: unit_vector("b").tolist()})
    with pytest.raises(WeaviateBaseError) as caught:
        raw.collections.use(store.collection_name).data.insert_many([bad])
    error = translate_error(caught.value, "batch write")
    assert type(error) is PermanentError and error.reason == "vector_store_rejected"


def test_a_read_only_shard_is_transient(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    store.upsert([make_record("seed")])
    shards = raw.collections.use(store.collection_name).config
    shards.update_shards(status="READONLY")
    try:
        with pytest.raises(VectorStoreUnavailable, match="read-only"):
            store.upsert([make_record("one")])  # every object failed
        with pytest.raises(VectorStoreUnavailable, match="read-only"):
            store.upsert([make_record("two"), make_record("three")])
    finally:
        shards.update_shards(status="READY")
    store.upsert([make_record("one")])
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 2


# -- 4. a collection deleted under the store ------------------------------------------------------


def test_a_collection_deleted_while_the_store_runs_is_recreated_with_the_explicit_schema(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    store.upsert([make_record("before")])
    raw.collections.delete(store.collection_name)

    after = make_record("after", tenant="acme")
    store.upsert([after])

    assert_has_our_schema(raw.collections.export_config(store.collection_name))
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 1 and store.get("before") is None
    got = store.get("after")
    assert got is not None and got.tenant == "acme"


def test_reads_of_a_deleted_collection_find_nothing_and_create_nothing(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    record = make_record("before")
    store.upsert([record])
    raw.collections.delete(store.collection_name)

    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 0
    assert store.get("before") is None
    assert store.search(record.vector, k=1, filters=SearchFilters(scope=ALL_TENANTS)) == []
    assert list(store.iter_records()) == []
    assert store.delete(["before"]) == 0
    assert not raw.collections.exists(store.collection_name)


# -- 5. an existing collection of another schema ---------------------------------------------


def _our_config_but(**changes: Any) -> dict[str, Any]:
    return {**collection_config("Unused"), **changes}


def _properties_but(name: str, replacement: Property | None) -> list[Property]:
    """Our properties with `name` replaced (or left out when `replacement` is None)."""
    ours = _our_config_but()["properties"]
    return [replacement if prop.name == name else prop for prop in ours if prop.name != name or replacement]


OTHER_SCHEMAS: dict[str, tuple[dict[str, Any], str]] = {
    "a property of another data type": (
        {"properties": _properties_but("size", Property(name="size", data_type=DataType.TEXT))},
        r"property 'size'.*text.*int",
    ),
    "a filter property tokenised into words": (
        {
            "properties": _properties_but(
                "tenant", Property(name="tenant", data_type=DataType.TEXT, tokenization=Tokenization.WORD)
            )
        },
        r"property 'tenant'.*tokeni[sz]ation.*word.*field",
    ),
    "another distance": (
        {
            "vector_config": Configure.Vectors.self_provided(
                name=VECTOR_NAME, vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.DOT)
            )
        },
        r"distance.*dot.*cosine",
    ),
    "another vector name": (
        {"vector_config": Configure.Vectors.self_provided(name="image")},
        r"vector.*'image'.*'default'",
    ),
    "multi-tenancy": (
        {"multi_tenancy_config": Configure.multi_tenancy(enabled=True)},
        r"multi-tenancy",
    ),
}


@pytest.mark.parametrize(("changes", "says"), OTHER_SCHEMAS.values(), ids=OTHER_SCHEMAS.keys())
def test_a_collection_of_another_schema_is_refused_at_first_use(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory, changes: dict[str, Any], says: str
) -> None:
    store = open_store()
    raw.collections.create(**{**_our_config_but(**changes), "name": store.collection_name})
    for use in (lambda: store.count(SearchFilters(scope=ALL_TENANTS)), lambda: store.upsert([make_record()])):
        with pytest.raises(ConfigError, match=says) as caught:
            use()
        assert "OMNIBIND_VECTORS__COLLECTION" in str(caught.value)
    if "multi_tenancy_config" not in changes:  # (one without tenants holds nothing anyway)
        assert raw.collections.use(store.collection_name).aggregate.over_all(total_count=True).total_count == 0


def test_a_collection_with_a_legacy_unnamed_vector_is_refused(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    raw.collections.create_from_dict(
        {
            "class": store.collection_name,
            "vectorizer": "none",
            "vectorIndexType": "hnsw",
            "vectorIndexConfig": {"distance": "cosine"},
            "properties": [{"name": spec.name, "dataType": ["text"]} for spec in PROPERTIES[:1]],
        }
    )
    with pytest.raises(ConfigError, match=r"unnamed.*OMNIBIND_VECTORS__COLLECTION"):
        store.upsert([make_record()])


def test_a_collection_weaviates_auto_schema_made_is_refused(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    # Another program writes first, without creating the collection: auto-schema infers one.
    raw.collections.use(store.collection_name).data.insert_many(
        [DataObject(properties={"upload_id": "x", "size": 1.5}, vector={VECTOR_NAME: unit_vector("x").tolist()})]
    )
    with pytest.raises(ConfigError, match="OMNIBIND_VECTORS__COLLECTION"):
        store.count(SearchFilters(scope=ALL_TENANTS))


def test_properties_added_to_the_schema_later_are_added_to_an_existing_collection(
    open_store: StoreOpener, raw: WeaviateClient, make_record: RecordFactory
) -> None:
    store = open_store()
    raw.collections.create(
        **{**_our_config_but(properties=_properties_but("checkpoint", None)), "name": store.collection_name}
    )
    record = make_record("new", checkpoint="ab" * 32)
    store.upsert([record])
    config = raw.collections.export_config(store.collection_name)
    assert_has_our_schema(config)
    got = store.get("new")
    assert got is not None and got.checkpoint == "ab" * 32


# -- 6. several processes on one collection ------------------------------------------------------


def write_in_chunks(address: tuple[str, int, str | None], collection: str, ids: list[str], start: Any) -> None:
    """A spawned worker: open its own store, wait for `start` (a Barrier), upsert `ids` in chunks."""
    store = open_weaviate_store(*address, collection)
    records = [
        VectorRecord(upload_id=upload_id, vector=unit_vector(upload_id), modality=Modality.IMAGE) for upload_id in ids
    ]
    start.wait(timeout=120)
    for offset in range(0, len(records), 7):
        store.upsert(records[offset : offset + 7])
    store.close()


def _run_workers(weaviate: WeaviateAddress, collection: str, plans: list[list[str]]) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(plans))
    address = (weaviate.url, weaviate.grpc_port, weaviate.api_key)
    processes = [ctx.Process(target=write_in_chunks, args=(address, collection, ids, start)) for ids in plans]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [process.exitcode for process in processes] == [0] * len(plans)


def test_two_processes_writing_one_collection_at_once_store_every_record_exactly_once(
    weaviate: WeaviateAddress, open_store: StoreOpener, make_record: RecordFactory
) -> None:
    store = open_store()
    store.upsert([make_record("seed")])
    shared = [f"both-{i:03d}" for i in range(40)]
    plans = [shared + [f"a-{i:03d}" for i in range(30)], list(reversed(shared)) + [f"b-{i:03d}" for i in range(30)]]

    _run_workers(weaviate, store.collection_name, plans)

    stored = Counter(record.upload_id for record in store.iter_records())
    expected = {"seed", *plans[0], *plans[1]}
    assert set(stored) == expected and set(stored.values()) == {1}
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == len(expected)
    got = store.get("both-007")
    assert got is not None and got.vector.tolist() == pytest.approx(unit_vector("both-007").tolist(), abs=1e-6)


def test_two_workers_creating_the_collection_at_once_share_one_with_our_schema(
    weaviate: WeaviateAddress, open_store: StoreOpener, raw: WeaviateClient
) -> None:
    store = open_store()  # the collection does not exist yet

    _run_workers(weaviate, store.collection_name, [["first"], ["second"]])

    named = [name for name in raw.collections.list_all(simple=True) if name.lower() == store.collection_name.lower()]
    assert named == [store.collection_name]
    assert_has_our_schema(raw.collections.export_config(store.collection_name))
    assert {record.upload_id for record in store.iter_records()} == {"first", "second"}
