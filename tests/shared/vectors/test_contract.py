"""The VectorStore contract: every backend must pass every test here (see conftest.make_store)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from shared.errors import ConfigError, PermanentError
from shared.events import Modality, Moderation
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord, tenants
from shared.vectors.store import VectorStore
from tests.support.ids import stable_repr

from .conftest import StoreFactory, unit_vector

RecordFactory = Callable[..., VectorRecord]
# Weaviate keeps dates at millisecond precision in some versions; LanceDB keeps microseconds.
TIMESTAMP_TOLERANCE = timedelta(milliseconds=1)


def assert_same_record(got: VectorRecord | None, want: VectorRecord) -> None:
    assert got is not None, f"{want.upload_id} not found"
    np.testing.assert_allclose(got.vector, want.vector, atol=1e-6)
    assert got.vector.dtype == np.float32
    for name in ("upload_id", "modality", "object", "content_type", "size", "sha256", "source", "tenant"):
        assert getattr(got, name) == getattr(want, name), name
    assert got.metadata == want.metadata
    assert got.moderation == want.moderation
    assert (got.model, got.checkpoint) == (want.model, want.checkpoint)
    assert abs(got.created_at - want.created_at) < TIMESTAMP_TOLERANCE
    assert abs(got.indexed_at - want.indexed_at) < TIMESTAMP_TOLERANCE


def test_the_store_satisfies_the_protocol(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)


def test_upsert_then_get_round_trips_every_field(store: VectorStore, full_record: RecordFactory) -> None:
    record = full_record()
    store.upsert([record])
    assert_same_record(store.get(record.upload_id), record)


def test_round_trip_keeps_unset_optional_fields_unset(store: VectorStore, make_record: RecordFactory) -> None:
    record = make_record("bare", modality=Modality.TEXT)
    store.upsert([record])
    got = store.get("bare")
    assert_same_record(got, record)
    assert got is not None and got.object is None and got.tenant is None and got.metadata == {}


def test_get_of_unknown_id_returns_none(store: VectorStore, make_record: RecordFactory) -> None:
    assert store.get("never-written") is None
    store.upsert([make_record("other")])
    assert store.get("never-written") is None


def test_upserting_the_same_id_twice_keeps_one_record_with_the_newer_data(
    store: VectorStore, full_record: RecordFactory
) -> None:
    first = full_record("same")
    second = full_record(
        "same",
        vector=unit_vector("second"),
        tenant="tenant-b",
        metadata={"version": "2"},
        moderation=Moderation(flagged=False, policy_version="2025-04-01"),
        indexed_at=first.indexed_at + timedelta(minutes=5),
    )
    store.upsert([first])
    store.upsert([second])
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 1
    assert_same_record(store.get("same"), second)


def test_upserting_one_id_twice_in_one_call_keeps_the_last(store: VectorStore, make_record: RecordFactory) -> None:
    store.upsert([make_record("dup", tenant="old"), make_record("dup", tenant="new")])
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 1
    got = store.get("dup")
    assert got is not None and got.tenant == "new"


def test_a_batch_of_100_records_is_written_completely(store: VectorStore, make_record: RecordFactory) -> None:
    records = [make_record(f"batch-{i:03d}") for i in range(100)]
    store.upsert(records)
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 100
    for record in (records[0], records[57], records[99]):
        assert_same_record(store.get(record.upload_id), record)


def test_search_returns_the_nearest_first_with_score_one_for_the_same_vector(
    store: VectorStore, make_record: RecordFactory
) -> None:
    records = [make_record(f"s-{i}") for i in range(20)]
    store.upsert(records)
    target = records[7]
    hits = store.search(target.vector, k=5, filters=SearchFilters(scope=ALL_TENANTS))
    assert hits[0].record.upload_id == target.upload_id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    expected = sorted((float(np.dot(r.vector, target.vector)) for r in records), reverse=True)[:5]
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_search_hits_carry_the_whole_record(store: VectorStore, full_record: RecordFactory) -> None:
    record = full_record()
    store.upsert([record])
    (hit,) = store.search(record.vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
    assert_same_record(hit.record, record)


def test_search_score_is_cosine_similarity_for_an_opposite_vector(
    store: VectorStore, make_record: RecordFactory
) -> None:
    record = make_record("north")
    store.upsert([record])
    (hit,) = store.search(-record.vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
    assert hit.score == pytest.approx(-1.0, abs=1e-4)


def test_search_returns_at_most_k_hits(store: VectorStore, make_record: RecordFactory) -> None:
    store.upsert([make_record(f"k-{i}") for i in range(12)])
    assert len(store.search(unit_vector("query"), k=3, filters=SearchFilters(scope=ALL_TENANTS))) == 3
    assert len(store.search(unit_vector("query"), k=1, filters=SearchFilters(scope=ALL_TENANTS))) == 1
    assert len(store.search(unit_vector("query"), k=50, filters=SearchFilters(scope=ALL_TENANTS))) == 12


def test_search_rejects_k_below_one(store: VectorStore, make_record: RecordFactory) -> None:
    store.upsert([make_record()])
    with pytest.raises(ValueError, match="k must be at least 1"):
        store.search(unit_vector("query"), k=0, filters=SearchFilters(scope=ALL_TENANTS))


def test_search_of_an_empty_store_returns_nothing(store: VectorStore) -> None:
    assert store.search(unit_vector("query"), k=5, filters=SearchFilters(scope=ALL_TENANTS)) == []


def _filter_corpus(make_record: RecordFactory) -> list[VectorRecord]:
    records = []
    for i, (modality, flagged, tenant) in enumerate(
        (m, f, t) for m in (Modality.IMAGE, Modality.TEXT, Modality.AUDIO) for f in (False, True) for t in ("a", "b")
    ):
        moderation = Moderation(flagged=flagged, categories=("violence",) if flagged else ())
        records.append(make_record(f"f-{i}", modality=modality, moderation=moderation, tenant=tenant))
    records.append(make_record("f-no-tenant", modality=Modality.IMAGE))
    return records


ALL = ALL_TENANTS
FILTER_CASES = [
    SearchFilters(scope=ALL, modality=Modality.IMAGE),
    SearchFilters(scope=ALL, modality=Modality.AUDIO),
    SearchFilters(scope=ALL, flagged=True),
    SearchFilters(scope=ALL, flagged=False),
    SearchFilters(scope=tenants("a")),
    SearchFilters(scope=ALL, modality=Modality.TEXT, flagged=True),
    SearchFilters(scope=tenants("b"), modality=Modality.IMAGE),
    SearchFilters(scope=tenants("a"), flagged=False),
    SearchFilters(scope=tenants("b"), modality=Modality.AUDIO, flagged=True),
    SearchFilters(scope=ALL),
    SearchFilters(scope=tenants("a", "b")),
    SearchFilters(scope=tenants("b", "nobody"), modality=Modality.TEXT),
    SearchFilters(scope=tenants("nobody")),
]


def _matches(record: VectorRecord, filters: SearchFilters) -> bool:
    scoped = filters.scoped_tenants
    return (
        (filters.modality is None or record.modality == filters.modality)
        and (filters.flagged is None or record.moderation.flagged == filters.flagged)
        and (scoped is None or record.tenant in scoped)
    )


@pytest.mark.parametrize("filters", FILTER_CASES, ids=stable_repr)
def test_search_returns_only_records_matching_the_filters(
    store: VectorStore, make_record: RecordFactory, filters: SearchFilters
) -> None:
    records = _filter_corpus(make_record)
    store.upsert(records)
    expected = {r.upload_id for r in records if _matches(r, filters)}
    hits = store.search(unit_vector("query"), k=len(records), filters=filters)
    assert {hit.record.upload_id for hit in hits} == expected


@pytest.mark.parametrize("filters", FILTER_CASES, ids=stable_repr)
def test_count_counts_only_records_matching_the_filters(
    store: VectorStore, make_record: RecordFactory, filters: SearchFilters
) -> None:
    records = _filter_corpus(make_record)
    store.upsert(records)
    assert store.count(filters) == sum(_matches(r, filters) for r in records)


def test_a_tenant_scope_never_sees_other_tenants_or_records_without_a_tenant(
    store: VectorStore, make_record: RecordFactory
) -> None:
    store.upsert([make_record("acme-1", tenant="acme"), make_record("beta-1", tenant="beta"), make_record("none-1")])
    acme = SearchFilters(scope=tenants("acme"))
    assert [hit.record.upload_id for hit in store.search(unit_vector("beta-1"), k=10, filters=acme)] == ["acme-1"]
    assert store.count(acme) == 1
    both = SearchFilters(scope=tenants("acme", "beta"))
    assert {hit.record.upload_id for hit in store.search(unit_vector("q"), k=10, filters=both)} == {"acme-1", "beta-1"}
    everything = SearchFilters(scope=ALL_TENANTS)
    assert store.count(everything) == 3
    assert len(store.search(unit_vector("q"), k=10, filters=everything)) == 3


def test_a_search_or_count_without_a_scope_cannot_be_expressed(store: VectorStore) -> None:
    with pytest.raises(TypeError):
        SearchFilters()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        store.count()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        store.search(unit_vector("q"), k=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        SearchFilters(scope=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SearchFilters(scope="acme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one tenant"):
        SearchFilters(scope=frozenset())


def test_filter_values_are_compared_literally_never_parsed(store: VectorStore, make_record: RecordFactory) -> None:
    tricky = "x' OR '1'='1"
    store.upsert(
        [
            make_record("plain", tenant="x"),
            make_record("tricky", tenant=tricky),
            make_record("spaced", tenant="x OR 1"),
        ]
    )
    hits = store.search(unit_vector("query"), k=10, filters=SearchFilters(scope=tenants(tricky)))
    assert [hit.record.upload_id for hit in hits] == ["tricky"]
    assert store.count(SearchFilters(scope=tenants("x"))) == 1
    assert store.count(SearchFilters(scope=tenants("x OR"))) == 0


def test_a_filter_that_matches_nothing_returns_nothing(store: VectorStore, make_record: RecordFactory) -> None:
    store.upsert([make_record(tenant="a")])
    assert store.search(unit_vector("query"), k=5, filters=SearchFilters(scope=tenants("nobody"))) == []
    assert store.count(SearchFilters(scope=tenants("nobody"))) == 0


def test_count_of_an_empty_store_is_zero(store: VectorStore) -> None:
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 0
    assert store.count(SearchFilters(scope=ALL_TENANTS, flagged=True)) == 0


def test_delete_returns_how_many_existed_and_removes_them(store: VectorStore, make_record: RecordFactory) -> None:
    store.upsert([make_record(f"d-{i}") for i in range(5)])
    assert store.delete(["d-1", "d-3", "missing", "d-1"]) == 2
    assert store.get("d-1") is None and store.get("d-3") is None
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 3
    assert {
        hit.record.upload_id for hit in store.search(unit_vector("q"), k=10, filters=SearchFilters(scope=ALL_TENANTS))
    } == {"d-0", "d-2", "d-4"}


def test_delete_on_an_empty_store_or_of_nothing_returns_zero(store: VectorStore, make_record: RecordFactory) -> None:
    assert store.delete(["nothing"]) == 0
    store.upsert([make_record("kept")])
    assert store.delete([]) == 0
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 1


def test_a_deleted_record_can_be_written_again(store: VectorStore, make_record: RecordFactory) -> None:
    record = make_record("again")
    store.upsert([record])
    store.delete(["again"])
    store.upsert([record])
    assert_same_record(store.get("again"), record)
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 1


def test_iter_records_yields_every_record_with_its_vector(store: VectorStore, make_record: RecordFactory) -> None:
    records = {r.upload_id: r for r in (make_record(f"it-{i}") for i in range(23))}
    store.upsert(list(records.values()))
    seen = list(store.iter_records(batch_size=5))
    assert sorted(r.upload_id for r in seen) == sorted(records)
    for got in seen:
        np.testing.assert_allclose(got.vector, records[got.upload_id].vector, atol=1e-6)


def test_iter_records_of_an_empty_store_yields_nothing(store: VectorStore) -> None:
    assert list(store.iter_records()) == []


def test_a_write_of_another_dimension_raises_config_error_naming_both(
    store: VectorStore, make_record: RecordFactory
) -> None:
    store.upsert([make_record("d32", dim=32)])
    with pytest.raises(ConfigError, match=r"dimension 16 .*dimension 32") as caught:
        store.upsert([make_record("d16", dim=16)])
    assert "another" in str(caught.value)
    assert store.get("d16") is None


def test_a_query_of_another_dimension_raises_config_error(store: VectorStore, make_record: RecordFactory) -> None:
    store.upsert([make_record(dim=32)])
    with pytest.raises(ConfigError, match=r"dimension 1024 .*dimension 32"):
        store.search(unit_vector("q", dim=1024), k=3, filters=SearchFilters(scope=ALL_TENANTS))


def test_a_configured_dimension_rejects_the_first_write_of_another(
    make_store: StoreFactory, make_record: RecordFactory
) -> None:
    store = make_store(dimension=1024)
    with pytest.raises(ConfigError, match=r"dimension 32 .*dimension 1024"):
        store.upsert([make_record(dim=32)])


def test_reopening_with_another_configured_dimension_raises_config_error(
    make_store: StoreFactory, make_record: RecordFactory
) -> None:
    make_store().upsert([make_record(dim=32)])
    with pytest.raises(ConfigError, match=r"32.*1024|1024.*32"):
        make_store(dimension=1024).upsert([make_record(dim=1024)])


def test_records_of_one_write_with_different_dimensions_are_rejected(
    store: VectorStore, make_record: RecordFactory
) -> None:
    with pytest.raises(PermanentError) as caught:
        store.upsert([make_record(dim=32), make_record(dim=16)])
    assert caught.value.reason == "invalid_vector"
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 0


@pytest.mark.parametrize(
    "vector",
    [
        np.full(32, np.nan, dtype=np.float32),
        np.zeros(32, dtype=np.float32),
        np.ones((2, 16), dtype=np.float32),
        np.array([], dtype=np.float32),
    ],
    ids=["nan", "zero", "2d", "empty"],
)
def test_an_unusable_vector_is_a_permanent_error(
    store: VectorStore, make_record: RecordFactory, vector: np.ndarray
) -> None:
    with pytest.raises(PermanentError) as caught:
        store.upsert([make_record("bad", vector=vector)])
    assert caught.value.reason == "invalid_vector"


def test_a_search_right_after_an_upsert_sees_it_from_another_handle(
    make_store: StoreFactory, make_record: RecordFactory
) -> None:
    writer, reader = make_store(), make_store()
    writer.upsert([make_record("first")])
    assert reader.count(SearchFilters(scope=ALL_TENANTS)) == 1  # the reader has the store open before the next write
    for i in range(5):
        record = make_record(f"ryw-{i}")
        writer.upsert([record])
        (hit,) = reader.search(record.vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
        assert hit.record.upload_id == record.upload_id
        assert reader.get(record.upload_id) is not None
    assert reader.count(SearchFilters(scope=ALL_TENANTS)) == 6


def test_a_closed_store_reopens_on_next_use(store: VectorStore, make_record: RecordFactory) -> None:
    store.upsert([make_record("before")])
    store.close()
    store.close()
    store.upsert([make_record("after")])
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 2


def test_stores_of_different_names_are_separate(make_store: StoreFactory, make_record: RecordFactory) -> None:
    small, big = make_store(name="small"), make_store(name="big")
    small.upsert([make_record("s", dim=32)])
    big.upsert([make_record("b", dim=64)])
    assert (small.count(SearchFilters(scope=ALL_TENANTS)), big.count(SearchFilters(scope=ALL_TENANTS))) == (1, 1)
    assert big.get("s") is None


def test_records_written_with_a_moderation_later_rewritten_keep_only_the_new(
    store: VectorStore, make_record: RecordFactory
) -> None:
    flagged = Moderation(flagged=True, categories=("nudity",), scores={"nudity": 0.9}, policy_version="1")
    record = make_record("rescored", moderation=flagged)
    store.upsert([record])
    store.upsert([replace(record, moderation=Moderation(flagged=False, policy_version="2"))])
    assert store.count(SearchFilters(scope=ALL_TENANTS, flagged=True)) == 0
    got = store.get("rescored")
    assert got is not None and got.moderation == Moderation(flagged=False, policy_version="2")
