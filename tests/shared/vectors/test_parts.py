"""The VectorStore contract for a record's extra vectors (`VectorRecord.parts`): every backend
(see conftest.make_store) keeps them with the one record, searches them, returns each upload
once and names the vector that matched."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from shared.errors import PermanentError
from shared.events import Modality
from shared.vectors.records import (
    ALL_TENANTS,
    MAIN_PART,
    SearchFilters,
    SearchHit,
    VectorRecord,
    best_per_upload,
    tenants,
)
from shared.vectors.store import VectorStore
from tests.support.weaviate_server import WeaviateAddress

from .conftest import StoreFactory, drop_weaviate_collections, unit_vector, weaviate_store

RecordFactory = Callable[..., VectorRecord]
EVERYONE = SearchFilters(scope=ALL_TENANTS)


def test_parts_round_trip_through_get_and_iter_records(store: VectorStore, make_record: RecordFactory) -> None:
    record = make_record("clip", modality=Modality.AUDIO, parts={"audio_track": unit_vector("clip-sound")})
    store.upsert([record, make_record("photo")])
    got = store.get("clip")
    assert got is not None and set(got.parts) == {"audio_track"}
    np.testing.assert_allclose(got.parts["audio_track"], unit_vector("clip-sound"), atol=1e-6)
    assert got.parts["audio_track"].dtype == np.float32
    photo = store.get("photo")
    assert photo is not None and dict(photo.parts) == {}
    by_id = {record.upload_id: record for record in store.iter_records()}
    assert set(by_id["clip"].parts) == {"audio_track"} and not by_id["photo"].parts


def test_a_search_near_a_part_finds_the_upload_once_and_names_the_part(
    store: VectorStore, make_record: RecordFactory
) -> None:
    store.upsert(
        [
            make_record("clip", modality=Modality.AUDIO, parts={"audio_track": unit_vector("clip-sound")}),
            *(make_record(f"other-{i}") for i in range(5)),
        ]
    )
    hits = store.search(unit_vector("clip-sound"), k=3, filters=EVERYONE)
    assert hits[0].record.upload_id == "clip" and hits[0].part == "audio_track"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [hit.record.upload_id for hit in hits].count("clip") == 1
    by_frames = store.search(unit_vector("clip"), k=3, filters=EVERYONE)
    assert by_frames[0].record.upload_id == "clip" and by_frames[0].part == MAIN_PART
    assert [hit.record.upload_id for hit in by_frames].count("clip") == 1


def test_k_counts_uploads_not_vectors(store: VectorStore, make_record: RecordFactory) -> None:
    # Every record's part is the query itself: without merging, one upload would fill k twice.
    query = unit_vector("query")
    store.upsert([make_record(f"v-{i}", parts={"audio_track": query, "transcript": query}) for i in range(4)])
    hits = store.search(query, k=3, filters=EVERYONE)
    assert len(hits) == 3 and len({hit.record.upload_id for hit in hits}) == 3
    assert all(hit.part in ("audio_track", "transcript") for hit in hits)


def test_filters_apply_to_the_search_of_parts(store: VectorStore, make_record: RecordFactory) -> None:
    sound = unit_vector("sound")
    store.upsert(
        [
            make_record("acme-clip", tenant="acme", modality=Modality.AUDIO, parts={"audio_track": sound}),
            make_record("globex-clip", tenant="globex", modality=Modality.AUDIO, parts={"audio_track": sound}),
        ]
    )
    hits = store.search(sound, k=5, filters=SearchFilters(scope=tenants("acme")))
    assert [(hit.record.upload_id, hit.part) for hit in hits] == [("acme-clip", "audio_track")]
    assert store.search(sound, k=5, filters=SearchFilters(scope=ALL_TENANTS, modality=Modality.IMAGE)) == []


def test_filters_parts_chooses_which_vectors_are_compared(store: VectorStore, make_record: RecordFactory) -> None:
    sound = unit_vector("sound")
    store.upsert([make_record("clip", parts={"audio_track": sound})])
    only_main = store.search(sound, k=1, filters=SearchFilters(scope=ALL_TENANTS, parts=frozenset({MAIN_PART})))
    assert only_main[0].part == MAIN_PART and only_main[0].score < 0.9
    only_track = store.search(
        unit_vector("clip"), k=1, filters=SearchFilters(scope=ALL_TENANTS, parts=frozenset({"audio_track"}))
    )
    assert only_track[0].part == "audio_track" and only_track[0].score < 0.9
    assert store.search(sound, k=1, filters=SearchFilters(scope=ALL_TENANTS, parts=frozenset({"transcript"}))) == []


def test_rewriting_a_record_without_a_part_removes_it(store: VectorStore, make_record: RecordFactory) -> None:
    sound = unit_vector("sound")
    store.upsert([make_record("clip", parts={"audio_track": sound}), make_record("plain")])
    store.upsert([make_record("clip")])
    got = store.get("clip")
    assert got is not None and dict(got.parts) == {}
    assert store.search(sound, k=5, filters=SearchFilters(scope=ALL_TENANTS, parts=frozenset({"audio_track"}))) == []
    assert store.count(EVERYONE) == 2


def test_a_part_added_by_another_handle_is_searched(make_store: StoreFactory, make_record: RecordFactory) -> None:
    reader, writer = make_store(name="shared"), make_store(name="shared")
    if hasattr(reader, "parts_refresh_s"):
        # Weaviate's handle re-reads its list of named vectors every few seconds; here, at once.
        reader.parts_refresh_s = 0.0
    writer.upsert([make_record("first")])
    assert reader.search(unit_vector("first"), k=1, filters=EVERYONE)[0].part == MAIN_PART
    writer.upsert([make_record("clip", parts={"transcript": unit_vector("words")})])
    hits = reader.search(unit_vector("words"), k=1, filters=EVERYONE)
    assert (hits[0].record.upload_id, hits[0].part) == ("clip", "transcript")


@pytest.mark.parametrize("name", ["Audio", "main", "1st", "with-dash", "x" * 49, ""])
def test_a_part_with_an_unusable_name_is_a_permanent_error(
    store: VectorStore, make_record: RecordFactory, name: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        store.upsert([make_record("clip", parts={name: unit_vector("x")})])
    assert caught.value.reason == "invalid_record"


def test_a_part_of_another_dimension_is_a_permanent_error(store: VectorStore, make_record: RecordFactory) -> None:
    with pytest.raises(PermanentError) as caught:
        store.upsert([make_record("clip", parts={"audio_track": unit_vector("x", dim=8)})])
    assert caught.value.reason == "invalid_vector"
    assert store.get("clip") is None


def test_best_per_upload_keeps_each_uploads_best_part() -> None:
    def hit(upload_id: str, score: float, part: str) -> SearchHit:
        return SearchHit(
            VectorRecord(upload_id=upload_id, vector=unit_vector(upload_id), modality=Modality.AUDIO), score, part
        )

    merged = best_per_upload(
        [hit("a", 0.5, MAIN_PART), hit("b", 0.7, MAIN_PART), hit("a", 0.9, "audio_track"), hit("c", 0.1, "transcript")],
        k=2,
    )
    assert [(h.record.upload_id, h.part, h.score) for h in merged] == [("a", "audio_track", 0.9), ("b", MAIN_PART, 0.7)]


def test_filters_refuse_an_empty_or_misnamed_parts_set() -> None:
    with pytest.raises(ValueError):
        SearchFilters(scope=ALL_TENANTS, parts=frozenset())
    with pytest.raises(ValueError):
        SearchFilters(scope=ALL_TENANTS, parts=frozenset({"Bad Name"}))


def test_weaviate_rereads_its_named_vectors_only_when_the_list_is_stale(weaviate: WeaviateAddress) -> None:
    reader = weaviate_store(weaviate, "PartsCacheT", None, parts_refresh_s=3600.0)
    writer = weaviate_store(weaviate, "PartsCacheT", None)
    try:
        writer.upsert([VectorRecord(upload_id="first", vector=unit_vector("first"), modality=Modality.IMAGE)])
        assert reader.search(unit_vector("first"), k=1, filters=EVERYONE)[0].part == MAIN_PART
        words = unit_vector("words")
        writer.upsert([VectorRecord("clip", unit_vector("clip"), Modality.AUDIO, parts={"transcript": words})])
        # Within the refresh interval the reader does not know the new named vector yet ...
        assert {hit.part for hit in reader.search(words, k=2, filters=EVERYONE)} == {MAIN_PART}
        # ... and once its list is stale, it searches it.
        reader.parts_refresh_s = 0.0
        assert reader.search(words, k=1, filters=EVERYONE)[0].part == "transcript"
    finally:
        reader.close()
        writer.close()
        drop_weaviate_collections(weaviate, "PartsCacheT")
