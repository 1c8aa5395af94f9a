"""The Weaviate adapter without a server: what it builds with the real client classes, how it
translates errors, and that the API key never leaks. (The live contract run is in
test_contract.py, enabled by WEAVIATE_URL.)"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from weaviate.classes.config import DataType, Tokenization
from weaviate.collections.batch.grpc_batch import _BatchGRPC
from weaviate.collections.classes.batch import BatchObject, BatchObjectReturn, ErrorObject, _BatchObject
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.collections.filters import _FilterToGRPC
from weaviate.exceptions import (
    AuthenticationFailedError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateBatchError,
    WeaviateConnectionError,
    WeaviateInsertManyAllFailedError,
    WeaviateInvalidInputError,
    WeaviateQueryError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
    WeaviateUnsupportedFeatureError,
)
from weaviate.util import _ServerVersion

from shared.config import Settings
from shared.errors import ConfigError, OmnibindError, PermanentError, VectorStoreUnavailable
from shared.events import Modality
from shared.vectors.properties import PROPERTIES, PROPERTY_NAMES, Kind
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord, record_uuid, tenants
from shared.vectors.weaviate import (
    WeaviateVectorStore,
    build_filter,
    from_weaviate_object,
    parse_endpoint,
    to_data_object,
    to_weaviate_properties,
)
from shared.vectors.weaviate_errors import (
    all_failed_error,
    batch_failures,
    check_server_version,
    failures_error,
    translate_error,
)
from shared.vectors.weaviate_schema import collection_config, collection_properties
from tests.support.ids import stable_repr

from .test_contract import assert_same_record

RecordFactory = Callable[..., VectorRecord]
SECRET = "wv-s3cr3t-api-key-0123456789"


# -- collection schema ---------------------------------------------------------------------


def test_the_collection_has_one_self_provided_hnsw_cosine_vector() -> None:
    config = _CollectionConfigCreate(**collection_config("OmnibindUpload"))._to_dict()
    assert config["class"] == "OmnibindUpload"
    assert config["vectorConfig"] == {
        "default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw", "vectorIndexConfig": {"distance": "cosine"}}
    }
    assert "vectorizer" not in config  # no legacy, collection-level vectorizer


def test_the_collection_declares_every_record_property_explicitly() -> None:
    config = _CollectionConfigCreate(**collection_config("OmnibindUpload"))._to_dict()
    declared = {prop["name"]: prop for prop in config["properties"]}
    assert tuple(declared) == PROPERTY_NAMES
    wanted_types = {
        Kind.TEXT: ["text"],
        Kind.TEXT_LIST: ["text[]"],
        Kind.INT: ["int"],
        Kind.BOOL: ["boolean"],
        Kind.DATE: ["date"],
        Kind.JSON: ["text"],
    }
    for spec in PROPERTIES:
        assert declared[spec.name]["dataType"] == wanted_types[spec.kind], spec.name
        assert declared[spec.name]["indexFilterable"] is spec.filterable, spec.name


def test_filterable_text_properties_match_whole_values_and_build_no_bm25_index() -> None:
    properties = {prop.name: prop for prop in collection_properties()}
    for name in ("upload_id", "modality", "tenant", "categories", "sha256"):
        assert properties[name].tokenization == Tokenization.FIELD, name
        assert properties[name].indexSearchable is False, name
    for name in ("metadata_json", "moderation_json"):
        assert properties[name].dataType == DataType.TEXT
        assert properties[name].indexFilterable is False and properties[name].indexSearchable is False


# -- filters --------------------------------------------------------------------------------


def _grpc_terms(filters: SearchFilters) -> set[tuple[str, str, Any]]:
    """The (property, operator, value) conditions of the gRPC filter the client would send."""
    weaviate_filter = build_filter(filters)
    assert weaviate_filter is not None
    message = _FilterToGRPC.convert(weaviate_filter)
    leaves = list(message.filters) if message.filters else [message]
    if message.filters:
        assert message.operator == message.OPERATOR_AND
    terms = set()
    for leaf in leaves:
        value = leaf.value_boolean if leaf.WhichOneof("test_value") == "value_boolean" else leaf.value_text
        terms.add((leaf.target.property, type(leaf).Operator.Name(leaf.operator), value))
    return terms


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (SearchFilters(scope=ALL_TENANTS, modality=Modality.IMAGE), {("modality", "OPERATOR_EQUAL", "image")}),
        (SearchFilters(scope=ALL_TENANTS, flagged=True), {("flagged", "OPERATOR_EQUAL", True)}),
        (SearchFilters(scope=ALL_TENANTS, flagged=False), {("flagged", "OPERATOR_EQUAL", False)}),
        (SearchFilters(scope=tenants("acme corp")), {("tenant", "OPERATOR_EQUAL", "acme corp")}),
        (
            SearchFilters(scope=ALL_TENANTS, modality=Modality.AUDIO, flagged=False),
            {("modality", "OPERATOR_EQUAL", "audio"), ("flagged", "OPERATOR_EQUAL", False)},
        ),
        (
            SearchFilters(scope=tenants("t"), modality=Modality.TEXT),
            {("modality", "OPERATOR_EQUAL", "text"), ("tenant", "OPERATOR_EQUAL", "t")},
        ),
        (
            SearchFilters(scope=tenants("t"), flagged=True),
            {("flagged", "OPERATOR_EQUAL", True), ("tenant", "OPERATOR_EQUAL", "t")},
        ),
        (
            SearchFilters(scope=tenants("x' OR '1'='1"), modality=Modality.IMAGE, flagged=True),
            {
                ("modality", "OPERATOR_EQUAL", "image"),
                ("flagged", "OPERATOR_EQUAL", True),
                ("tenant", "OPERATOR_EQUAL", "x' OR '1'='1"),
            },
        ),
    ],
    ids=stable_repr,
)
def test_search_filters_become_a_conjunction_of_equalities(
    filters: SearchFilters, expected: set[tuple[str, str, Any]]
) -> None:
    assert _grpc_terms(filters) == expected


def test_the_all_tenants_scope_alone_means_no_weaviate_filter() -> None:
    assert build_filter(SearchFilters(scope=ALL_TENANTS)) is None


def test_a_scope_of_several_tenants_becomes_a_disjunction_of_equalities() -> None:
    weaviate_filter = build_filter(SearchFilters(scope=tenants("b", "a"), flagged=True))
    assert weaviate_filter is not None
    message = _FilterToGRPC.convert(weaviate_filter)
    assert message.operator == message.OPERATOR_AND
    scope, flagged = message.filters
    assert scope.operator == scope.OPERATOR_OR
    assert [(leaf.target.property, leaf.value_text) for leaf in scope.filters] == [("tenant", "a"), ("tenant", "b")]
    assert (flagged.target.property, flagged.value_boolean) == ("flagged", True)


# -- record <-> object ------------------------------------------------------------------------


def test_record_properties_round_trip_through_a_weaviate_object(full_record: RecordFactory) -> None:
    record = full_record()
    properties = to_weaviate_properties(record)
    assert set(properties) == set(PROPERTY_NAMES)
    assert properties["categories"] == ["violence", "weapons"] and properties["flagged"] is True
    back = from_weaviate_object(properties, {"default": record.vector.tolist()})
    assert_same_record(back, record)


def test_unset_properties_are_left_out_and_read_back_unset(make_record: RecordFactory) -> None:
    record = make_record("bare", modality=Modality.TEXT)
    properties = to_weaviate_properties(record)
    assert "tenant" not in properties and "object_bucket" not in properties and "size" not in properties
    assert_same_record(from_weaviate_object(properties, {"default": record.vector.tolist()}), record)


def test_dates_returned_as_rfc3339_strings_are_read(full_record: RecordFactory) -> None:
    record = full_record()
    properties = to_weaviate_properties(record)
    properties["created_at"] = "2025-03-04T05:06:07.123Z"
    properties["indexed_at"] = record.indexed_at.isoformat()
    assert_same_record(from_weaviate_object(properties, [float(v) for v in record.vector]), record)


def test_an_object_without_its_vector_is_an_error(full_record: RecordFactory) -> None:
    with pytest.raises(VectorStoreUnavailable, match="without its vector"):
        from_weaviate_object(to_weaviate_properties(full_record()), {})


def _grpc_object(record: VectorRecord) -> Any:
    """The gRPC BatchObject the client builds for `to_data_object(record)` (as insert_many does)."""
    data = to_data_object(record)
    batch_object = _BatchObject(
        collection="OmnibindUpload",
        vector=data.vector,
        uuid=str(data.uuid),
        properties=data.properties,
        tenant=None,
        references=None,
        index=0,
    )
    return _BatchGRPC(_ServerVersion(1, 27, 0), None, None).grpc_object(batch_object)


def test_a_record_is_sent_with_its_deterministic_uuid_and_named_vector(full_record: RecordFactory) -> None:
    record = full_record()
    message = _grpc_object(record)
    assert message.uuid == str(record_uuid(record.upload_id))
    (vectors,) = message.vectors
    assert vectors.name == "default"
    sent = np.frombuffer(vectors.vector_bytes, dtype=np.float32)
    np.testing.assert_array_equal(sent, record.vector)


def test_a_record_is_sent_with_typed_properties(full_record: RecordFactory) -> None:
    message = _grpc_object(full_record())
    scalars = dict(message.properties.non_ref_properties)
    assert scalars["upload_id"] == "full-1" and scalars["flagged"] is True
    assert scalars["size"] == 47_980 and scalars["created_at"].startswith("2025-03-04T05:06:07.123")
    (categories,) = message.properties.text_array_properties
    assert (categories.prop_name, list(categories.values)) == ("categories", ["violence", "weapons"])


def test_unflagged_records_send_an_empty_category_list(make_record: RecordFactory) -> None:
    message = _grpc_object(make_record())
    assert list(message.properties.empty_list_props) == ["categories"]


# -- errors ------------------------------------------------------------------------------------


CLIENT_FLOOR = "Weaviate version 1.27.0 or higher."
# What Weaviate v1.35.2 answered, word for word, when objects were written to a live server
# (tests/shared/vectors/test_weaviate_live.py provokes them; the families come from its source).
REJECTED = [
    "invalid integer property 'size' on class 'OmnibindUpload': requires an integer, the given value is 'abc'",
    "invalid date property 'created_at' on class 'OmnibindUpload': requires a string with a RFC3339 formatted "
    "date, but the given value is 'yesterday'",
    "invalid boolean property 'flagged' on class 'OmnibindUpload': not a bool, but string",
    "invalid text property 'tenant' on class 'OmnibindUpload': not a string, but float64",
    "invalid text array property 'categories' on class 'OmnibindUpload': invalid text array value: "
    "[%!s(int64=1) %!s(int64=2)]",
]
NOT_OUR_COLLECTION = [
    "Validate vector index default for target vector c2bce6ea-1d2d-4654-9865-bb603f8a325a: new node has a vector "
    "with length 16. Existing nodes have vectors with length 32: vector dimensions do not match the index dimensions",
    "collection OmnibindUpload does not have configuration for vector other",
    "class OmnibindUpload has multi-tenancy enabled, but request was without tenant",
    "no such prop with name 'x' found in class 'OmnibindUpload' in the schema. Check your schema files for which "
    "properties in this class are available",
]
READ_ONLY = "store is read-only due to: manually set by user"
TRY_AGAIN = [
    READ_ONLY,
    "store is read-only due to: disk usage too high. Set to read-only at 91.20%, threshold set to 90.00%",
    "not enough memory",
    "context deadline exceeded",
    "leader not found",
    'class "OmnibindUpload" not found in schema',
    "something Weaviate has never said before",
]


def _status_error(code: int, body: dict[str, Any] | None = None) -> UnexpectedStatusCodeError:
    request = httpx.Request("POST", "http://weaviate:8080/v1/schema")
    return UnexpectedStatusCodeError("Create collection", httpx.Response(code, json=body or {}, request=request))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (WeaviateConnectionError("connection refused"), VectorStoreUnavailable),
        (WeaviateStartUpError("could not connect"), VectorStoreUnavailable),
        (WeaviateTimeoutError("read timed out"), VectorStoreUnavailable),
        (WeaviateBatchError("<_InactiveRpcError StatusCode.UNAVAILABLE>"), VectorStoreUnavailable),
        (WeaviateQueryError("context deadline exceeded", "GRPC search"), VectorStoreUnavailable),
        (_status_error(500), VectorStoreUnavailable),
        (_status_error(503), VectorStoreUnavailable),
        (_status_error(429), VectorStoreUnavailable),
        (_status_error(401), ConfigError),
        (_status_error(403), ConfigError),
        (_status_error(422, {"error": [{"message": "property 'x' already exists"}]}), ConfigError),
        (AuthenticationFailedError("bad key"), ConfigError),
        (WeaviateQueryError("knn search: 1024 vs 32: vector lengths don't match", "GRPC search"), ConfigError),
        (WeaviateInvalidInputError("bad property"), PermanentError),
        (httpx.ConnectError("refused"), VectorStoreUnavailable),
        (WeaviateStartUpError(f"Weaviate version 1.20.0 is not supported. Please use {CLIENT_FLOOR}"), ConfigError),
        (WeaviateUnsupportedFeatureError("Dynamic RAG", "1.27.0", "1.27.14"), ConfigError),
        (WeaviateInsertManyAllFailedError(f"Here is the set of all errors: {REJECTED[0]}"), PermanentError),
        (WeaviateInsertManyAllFailedError(f"Here is the set of all errors: {READ_ONLY}"), VectorStoreUnavailable),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.__name__,
)
def test_client_errors_are_translated_into_the_omnibind_tree(error: Exception, expected: type[OmnibindError]) -> None:
    translated = translate_error(error, "search (OmnibindUpload)")
    assert type(translated) is expected
    assert "search (OmnibindUpload)" in str(translated)


def test_per_object_batch_errors_name_every_failing_upload() -> None:
    result = BatchObjectReturn(
        errors={
            index: ErrorObject(message=f"shard {index} read-only", object_=BatchObject(collection="C", index=index))
            for index in (0, 2)
        }
    )
    failures = batch_failures(result, ["u0", "u1", "u2"])
    assert failures == {"u0": "shard 0 read-only", "u2": "shard 2 read-only"}
    error = failures_error(failures, 3, "OmnibindUpload")
    assert isinstance(error, VectorStoreUnavailable)
    assert "2 of 3" in str(error) and "u0: shard 0 read-only" in str(error) and "u2" in str(error)


def test_a_batch_without_errors_has_no_failures() -> None:
    assert batch_failures(BatchObjectReturn(), ["u0"]) == {}


def test_a_per_object_dimension_error_is_a_config_error() -> None:
    error = failures_error({"u1": "insert: vector lengths don't match: 1024 vs 32"}, 1, "OmnibindUpload")
    assert isinstance(error, ConfigError)


# -- connecting --------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable_store() -> WeaviateVectorStore:
    endpoint = parse_endpoint(f"http://127.0.0.1:{_closed_port()}", grpc_port=_closed_port())
    return WeaviateVectorStore(endpoint, api_key=SecretStr(SECRET), collection="OmnibindUpload")


@pytest.mark.parametrize(
    "call",
    [
        lambda store, record: store.count(SearchFilters(scope=ALL_TENANTS)),
        lambda store, record: store.upsert([record]),
        lambda store, record: store.search(record.vector, k=1, filters=SearchFilters(scope=ALL_TENANTS)),
        lambda store, record: store.get(record.upload_id),
    ],
    ids=["count", "upsert", "search", "get"],
)
def test_a_refused_connection_is_vector_store_unavailable(
    unreachable_store: WeaviateVectorStore, make_record: RecordFactory, call: Callable[..., Any]
) -> None:
    with pytest.raises(VectorStoreUnavailable) as caught:
        call(unreachable_store, make_record())
    assert caught.value.reason == "vector_store_unavailable"
    assert isinstance(caught.value.__cause__, WeaviateBaseError)


def test_the_api_key_never_shows_in_repr_errors_or_logs(
    unreachable_store: WeaviateVectorStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(VectorStoreUnavailable) as caught:
        unreachable_store.count(SearchFilters(scope=ALL_TENANTS))
    texts = [repr(unreachable_store), str(caught.value), repr(caught.value.__cause__), caplog.text]
    assert all(SECRET not in text for text in texts)
    assert "auth=api-key" in repr(unreachable_store)
    settings = Settings(vectors={"backend": "weaviate", "url": "http://w:8080", "api_key": SECRET})
    assert SECRET not in repr(settings) and SECRET not in settings.model_dump_json()
    assert SECRET not in repr(WeaviateVectorStore.from_settings(settings))


def test_building_the_store_connects_to_nothing() -> None:
    # Port 9 (discard) on a reserved address: any connection attempt would fail loudly.
    store = WeaviateVectorStore(parse_endpoint("http://192.0.2.1:9"), collection="OmnibindUpload")
    assert store.collection_name == "OmnibindUpload"
    store.close()


@pytest.mark.parametrize(
    ("url", "http", "grpc"),
    [
        ("http://weaviate:8080", ("weaviate", 8080, False), ("weaviate", 50051, False)),
        ("https://vectors.example.com", ("vectors.example.com", 443, True), ("vectors.example.com", 50051, True)),
        ("http://10.0.0.5", ("10.0.0.5", 80, False), ("10.0.0.5", 50051, False)),
        ("http://[::1]:8080/", ("::1", 8080, False), ("::1", 50051, False)),
    ],
)
def test_the_endpoint_is_read_from_the_url(url: str, http: tuple[Any, ...], grpc: tuple[Any, ...]) -> None:
    endpoint = parse_endpoint(url)
    assert (endpoint.http_host, endpoint.http_port, endpoint.http_secure) == http
    assert (endpoint.grpc_host, endpoint.grpc_port, endpoint.grpc_secure) == grpc


def test_grpc_host_port_and_tls_can_be_set_apart() -> None:
    endpoint = parse_endpoint("http://weaviate:8080", grpc_host="weaviate-grpc", grpc_port=443, grpc_secure=True)
    assert (endpoint.grpc_host, endpoint.grpc_port, endpoint.grpc_secure) == ("weaviate-grpc", 443, True)


@pytest.mark.parametrize(
    "url",
    ["weaviate:8080", "ftp://weaviate", "http://", "http://user:pw@weaviate:8080", "http://w:8080/v1", "http://w:x"],
)
def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="OMNIBIND_VECTORS__URL"):
        parse_endpoint(url)


def test_the_weaviate_backend_without_a_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OMNIBIND_VECTORS__URL"):
        WeaviateVectorStore.from_settings(Settings(vectors={"backend": "weaviate"}))


@pytest.mark.parametrize("name", ["omnibind", "Omni-bind", "Omni bind", ""])
def test_a_collection_name_weaviate_would_refuse_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="collection name"):
        WeaviateVectorStore(parse_endpoint("http://w:8080"), collection=name)


def test_settings_reach_the_store() -> None:
    settings = Settings(
        vectors={
            "backend": "weaviate",
            "url": "https://w.example:8443",
            "grpc_port": 50052,
            "collection": "Uploads",
            "dimension": 1024,
            "timeout_query_s": 7,
        }
    )
    store = WeaviateVectorStore.from_settings(settings)
    assert store.collection_name == "Uploads"
    assert "https://w.example:8443" in repr(store) and "50052" in repr(store)


@pytest.mark.parametrize("message", REJECTED)
def test_an_object_the_server_rejects_is_a_permanent_error(message: str) -> None:
    error = failures_error({"u1": message}, 2, "OmnibindUpload")
    assert type(error) is PermanentError and error.reason == "vector_store_rejected"
    assert f"u1: {message}" in str(error)


@pytest.mark.parametrize("message", NOT_OUR_COLLECTION)
def test_an_object_that_does_not_fit_the_collection_is_a_config_error(message: str) -> None:
    error = failures_error({"u1": message, "u2": REJECTED[0]}, 2, "OmnibindUpload")
    assert isinstance(error, ConfigError) and "OMNIBIND_VECTORS__COLLECTION" in str(error)


@pytest.mark.parametrize("message", TRY_AGAIN)
def test_other_per_object_errors_are_retried(message: str) -> None:
    assert isinstance(failures_error({"u1": message}, 1, "OmnibindUpload"), VectorStoreUnavailable)


def test_a_batch_with_rejected_and_retryable_objects_is_retried() -> None:
    # The index writer then retries record by record, so the rejected one fails alone.
    error = failures_error({"u1": REJECTED[0], "u2": READ_ONLY}, 2, "OmnibindUpload")
    assert isinstance(error, VectorStoreUnavailable)


def test_a_batch_whose_every_object_is_rejected_names_the_uploads_and_every_message() -> None:
    exc = WeaviateInsertManyAllFailedError("Here is the set of all errors: " + "\n".join(REJECTED[:2]))
    error = all_failed_error(exc, ["u1", "u2", "u3"], "OmnibindUpload")
    assert type(error) is PermanentError and error.reason == "vector_store_rejected"
    assert "all 3 objects" in str(error) and "u1, u2, u3" in str(error)
    assert REJECTED[0] in str(error) and REJECTED[1] in str(error)


def test_every_object_failing_for_a_retryable_reason_is_retried() -> None:
    exc = WeaviateInsertManyAllFailedError(f"Here is the set of all errors: {REJECTED[0]}\n{READ_ONLY}")
    assert isinstance(all_failed_error(exc, ["u1", "u2"], "OmnibindUpload"), VectorStoreUnavailable)


# -- server versions -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.27.0", "1.35.2", "v1.36.0", "1.99.3-rc.1"])
def test_weaviate_1x_from_1_27_is_supported(version: str) -> None:
    check_server_version(version, "http://weaviate:8080")


@pytest.mark.parametrize("version", ["1.26.9", "1.20.0", "0.22.0", "2.0.0", "", "unknown"])
def test_other_server_versions_are_a_config_error_naming_the_supported_ones(version: str) -> None:
    with pytest.raises(ConfigError, match=r"1\.27\.0 or a newer 1\.x.*OMNIBIND_VECTORS__URL") as caught:
        check_server_version(version, "http://weaviate:8080")
    assert repr(version) in str(caught.value) and "http://weaviate:8080" in str(caught.value)
