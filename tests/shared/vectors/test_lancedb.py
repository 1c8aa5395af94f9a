"""What only the embedded LanceDB store promises: several processes, compaction, ANN index."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import lancedb
import numpy as np
import pytest
from lance.dataset import DatasetOptimizer

from shared.errors import ConfigError, VectorStoreUnavailable
from shared.events import Modality
from shared.file_locks import exclusive_lock
from shared.vectors.lancedb import (
    LanceDBVectorStore,
    arrow_schema,
    arrow_to_records,
    index_cache_needed_mb,
    records_to_arrow,
)
from shared.vectors.lancedb_maintenance import row_bytes, target_rows_per_fragment
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord, tenants

from .conftest import unit_vector
from .writers import upsert_in_chunks

RecordFactory = Callable[..., VectorRecord]
REPO_ROOT = Path(__file__).resolve().parents[3]


def _run_writers(path: Path, table: str, plans: dict[str, list[str]], chunk: int, *, lockstep: bool = False) -> None:
    """Run one spawned process per plan, all released at once, and wait for them
    (`lockstep`: they also wait for each other before every chunk).

    The table exists beforehand (one "seed" record), so the writers race on records, not
    on creating the table.
    """
    LanceDBVectorStore(path, table=table).upsert(
        [VectorRecord(upload_id="seed", vector=unit_vector("seed"), modality=Modality.TEXT)]
    )
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    step = ctx.Barrier(len(plans)) if lockstep else None
    processes = [
        ctx.Process(
            target=upsert_in_chunks, args=(path, table, writer, ids, chunk, start, step), name=f"writer-{writer}"
        )
        for writer, ids in plans.items()
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=240)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)


def _stored_ids(path: Path, table: str) -> list[str]:
    """Every upload_id row in the table but the seed, read straight through lancedb
    (duplicates included)."""
    rows = lancedb.connect(path).open_table(table).to_arrow().column("upload_id").to_pylist()
    return [upload_id for upload_id in rows if upload_id != "seed"]


def test_two_processes_upserting_the_same_ids_at_once_keep_exactly_one_record_each(tmp_path: Path) -> None:
    ids = [f"same-{i:03d}" for i in range(100)]
    # Both write the same ids in the same order, in lockstep, so that both insert each id
    # while it is new: without the write lock Lance keeps both copies (seen: 302 rows for
    # 200 ids).
    _run_writers(tmp_path, "uploads", {"A": ids, "B": ids}, chunk=2, lockstep=True)
    rows = _stored_ids(tmp_path, "uploads")
    duplicated = [upload_id for upload_id, n in Counter(rows).items() if n > 1]
    assert duplicated == []
    assert sorted(rows) == ids
    store = LanceDBVectorStore(tmp_path)
    for record in store.iter_records():
        if record.upload_id == "seed":
            continue
        writer = record.metadata["writer"]
        np.testing.assert_allclose(record.vector, unit_vector(f"{writer}-{record.upload_id}"), atol=1e-6)


def test_two_processes_upserting_overlapping_and_distinct_ids_lose_none(tmp_path: Path) -> None:
    shared_ids = [f"both-{i:03d}" for i in range(40)]
    plan_a = [f"a-{i:03d}" for i in range(40)] + shared_ids
    plan_b = shared_ids[::-1] + [f"b-{i:03d}" for i in range(40)]
    _run_writers(tmp_path, "uploads", {"A": plan_a, "B": plan_b}, chunk=2)
    rows = _stored_ids(tmp_path, "uploads")
    assert len(rows) == len(set(rows)) == 120
    assert set(rows) == set(plan_a) | set(plan_b)
    assert LanceDBVectorStore(tmp_path).count(SearchFilters(scope=ALL_TENANTS)) == 121  # with the seed


def test_another_process_reads_and_extends_an_existing_store(tmp_path: Path, make_record: RecordFactory) -> None:
    store = LanceDBVectorStore(tmp_path)
    record = make_record("from-parent")
    store.upsert([record])
    child = textwrap.dedent(
        f"""
        import numpy as np
        from shared.events import Modality
        from shared.vectors.lancedb import LanceDBVectorStore
        from shared.vectors.records import VectorRecord
        store = LanceDBVectorStore({str(tmp_path)!r})
        got = store.get("from-parent")
        assert got is not None and got.modality == Modality.IMAGE, got
        vector = np.ones({record.vector.shape[0]}, dtype=np.float32)
        store.upsert([VectorRecord(upload_id="from-child", vector=vector, modality=Modality.TEXT)])
        print(store.dimension)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "32"
    (hit,) = store.search(np.ones(32, dtype=np.float32), k=1, filters=SearchFilters(scope=ALL_TENANTS))
    assert hit.record.upload_id == "from-child"


def test_a_store_forked_before_first_use_works_in_the_child(tmp_path: Path) -> None:
    # As in a Celery prefork pool: the parent builds the store, children use it. The parent is
    # a fresh interpreter, as a worker's is: forking this test process, where other tests
    # have started lancedb's runtime threads, is unsafe whatever the store does.
    code = textwrap.dedent(
        f"""
        import multiprocessing
        import numpy as np
        from shared.events import Modality
        from shared.vectors.lancedb import LanceDBVectorStore
        from shared.vectors.records import VectorRecord
        store = LanceDBVectorStore({str(tmp_path)!r})
        record = VectorRecord(upload_id="in-child", vector=np.ones(32, dtype=np.float32), modality=Modality.TEXT)
        child = multiprocessing.get_context("fork").Process(target=store.upsert, args=([record],))
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0, child.exitcode
        assert store.get("in-child") is not None
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr


def test_building_a_store_neither_imports_lancedb_nor_touches_the_disk(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from shared.config import Settings
        from shared.vectors.factory import open_vector_store
        store = open_vector_store(Settings(data_dir=Path({str(tmp_path / "data")!r})))
        assert "lancedb" not in sys.modules, "lancedb imported before first use"
        assert not Path({str(tmp_path / "data")!r}).exists(), "data dir created before first use"
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def _fragments(path: Path, table: str = "uploads") -> int:
    return int(lancedb.connect(path).open_table(table).stats()["fragment_stats"]["num_fragments"])


def test_optimize_compacts_small_fragments_and_keeps_every_record(tmp_path: Path, make_record: RecordFactory) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0)
    records = [make_record(f"o-{i}") for i in range(12)]
    for record in records:
        store.upsert([record])
    store.upsert([make_record("o-3", tenant="rewritten")])
    store.delete(["o-5"])
    assert _fragments(tmp_path) >= 10

    result = store.optimize()

    assert result.fragments_before >= 10
    assert result.fragments_after == _fragments(tmp_path) == 1
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 11
    got = store.get("o-3")
    assert got is not None and got.tenant == "rewritten"
    (hit,) = store.search(records[8].vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
    assert hit.record.upload_id == "o-8"


def test_the_store_compacts_by_itself_every_n_writes(tmp_path: Path, make_record: RecordFactory) -> None:
    # (A 1 s window: the child cleans up once more a window after compacting.)
    store = LanceDBVectorStore(tmp_path, compact_every_writes=5, cleanup_older_than_s=1)
    for i in range(4):
        store.upsert([make_record(f"n-{i}")])
    assert _fragments(tmp_path) == 4
    store.upsert([make_record("n-4")])
    assert store.wait_for_maintenance(60)  # the fifth write started it in a child process
    assert _fragments(tmp_path) == 1
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 5


def test_bulk_writes_start_the_compaction_by_rows_before_the_write_count(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    # Rows the upload_id index does not cover yet are read in full by every upsert's match
    # step: bulk writers must not pile up compaction_every_writes x their batch of them.
    store = LanceDBVectorStore(tmp_path, compact_every_writes=100, compact_every_rows=10, cleanup_older_than_s=1)
    store.upsert([make_record(f"b-{i}") for i in range(6)])
    assert not store.maintaining() and _fragments(tmp_path) == 1
    store.upsert([make_record(f"b-{i}") for i in range(6, 12)])  # 12 rows: due
    assert store.maintaining()
    assert store.wait_for_maintenance(60)
    assert _fragments(tmp_path) == 1
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 12


def test_without_the_row_trigger_only_the_write_count_starts_a_compaction(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=3, compact_every_rows=0, cleanup_older_than_s=1)
    store.upsert([make_record(f"w-{i}") for i in range(50)])
    store.upsert([make_record(f"w-{i}") for i in range(50, 100)])
    assert not store.maintaining() and _fragments(tmp_path) == 2
    store.upsert([make_record("w-100")])
    assert store.maintaining()
    assert store.wait_for_maintenance(60)
    assert _fragments(tmp_path) == 1


def _key_index_stats(path: Path) -> list[tuple[str, int, int]]:
    """(name, indexed rows, unindexed rows) of each index on upload_id."""
    table = lancedb.connect(path).open_table("uploads")
    found = []
    for index in table.list_indices():
        if index.columns == ["upload_id"]:
            stats = table.index_stats(index.name)
            assert stats is not None
            found.append((index.name, stats.num_indexed_rows, stats.num_unindexed_rows))
    return found


def test_optimize_indexes_upload_id_from_key_index_min_rows_on_and_adds_later_rows(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, key_index_min_rows=40)
    store.upsert([make_record(f"k-{i}") for i in range(39)])
    assert store.optimize().key_index_built is False
    assert _key_index_stats(tmp_path) == []

    store.upsert([make_record("k-39")])
    assert store.optimize().key_index_built is True
    assert _key_index_stats(tmp_path) == [("upload_id_btree", 40, 0)]

    store.upsert([make_record(f"later-{i}") for i in range(5)])
    assert _key_index_stats(tmp_path) == [("upload_id_btree", 40, 5)]
    assert store.optimize().key_index_built is False  # built once, then kept up to date
    assert _key_index_stats(tmp_path) == [("upload_id_btree", 45, 0)]


def test_upserts_through_the_key_index_overwrite_indexed_and_unindexed_rows_alike(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, key_index_min_rows=30)
    store.upsert([make_record(f"u-{i}") for i in range(30)])
    store.optimize()  # u-0..29 are in the index
    store.upsert([make_record(f"v-{i}") for i in range(5)])  # v-0..4 are not, yet

    store.upsert(
        [make_record(f"u-{i}", tenant="again") for i in range(0, 30, 3)] + [make_record("v-2", tenant="again")]
    )
    store.upsert([make_record("w-0")])

    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 36
    assert store.count(SearchFilters(scope=tenants("again"))) == 11
    assert Counter(record.upload_id for record in store.iter_records()).most_common(1)[0][1] == 1


def _vector_indices(path: Path) -> list[str]:
    table = lancedb.connect(path).open_table("uploads")
    return [index.name for index in table.list_indices() if index.columns == ["vector"]]


def test_an_ann_index_is_built_at_the_threshold_and_rebuilt_after_4x_growth(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, ann_index_min_rows=300)
    records = [make_record(f"ann-{i}", tenant="t1" if i % 2 else "t2") for i in range(299)]
    store.upsert(records)
    assert store.optimize().index_built is False
    assert _vector_indices(tmp_path) == []

    store.upsert([make_record("ann-299")])
    assert store.optimize().index_built is True
    assert _vector_indices(tmp_path) == ["vector_ivf_flat_rows_300"]
    store.upsert([make_record(f"more-{i}") for i in range(600)])
    assert store.optimize().index_built is False  # 900 rows < 4 x 300
    # ... but the rows written since the build were added to it: searches never scan them.
    (stats,) = [lancedb.connect(tmp_path).open_table("uploads").index_stats(name) for name in _vector_indices(tmp_path)]
    assert stats is not None and (stats.num_indexed_rows, stats.num_unindexed_rows) == (900, 0)

    store.upsert([make_record(f"most-{i}") for i in range(300)])
    assert store.optimize().index_built is True
    assert _vector_indices(tmp_path) == ["vector_ivf_flat_rows_1200"]


def test_searches_through_the_index_find_the_nearest_and_respect_filters(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    # More partitions than the 50 a search probes at least.
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, ann_index_min_rows=3000, ann_partitions=60)
    records = [make_record(f"ann-{i}", tenant="t1" if i % 2 else "t2") for i in range(2999)]
    records.append(make_record("rare", vector=-records[0].vector, tenant="t3"))
    store.upsert(records)
    assert store.optimize().index_built is True

    for target in (records[42], records[43], records[2998]):
        (hit,) = store.search(target.vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
        assert hit.record.upload_id == target.upload_id and hit.score == pytest.approx(1.0, abs=1e-4)
    hits = store.search(records[43].vector, k=5, filters=SearchFilters(scope=tenants("t1")))
    assert hits[0].record.upload_id == "ann-43" and len(hits) == 5
    assert all(hit.record.tenant == "t1" for hit in hits)
    # A filter matching one record opposite the query, in a partition among the farthest
    # (unprobed at first), still finds it: probing goes on until k hits or the end.
    (rare,) = store.search(records[0].vector, k=5, filters=SearchFilters(scope=tenants("t3")))
    assert rare.record.upload_id == "rare"
    late = make_record("after-index")
    store.upsert([late])
    assert store.search(late.vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))[0].record.upload_id == "after-index"


def test_a_held_write_lock_makes_writes_unavailable_after_the_timeout(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, lock_timeout_s=0.2)
    store.upsert([make_record("first")])
    with exclusive_lock(tmp_path / "uploads.lock", timeout_s=1), pytest.raises(VectorStoreUnavailable) as caught:
        store.upsert([make_record("blocked")])
    assert caught.value.reason == "vector_store_unavailable"
    assert "lock" in str(caught.value)
    store.upsert([make_record("after")])
    assert store.count(SearchFilters(scope=ALL_TENANTS)) == 2


def test_a_data_dir_that_is_a_file_makes_the_store_unavailable(tmp_path: Path, make_record: RecordFactory) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = LanceDBVectorStore(blocker / "vectors")
    with pytest.raises(VectorStoreUnavailable):
        store.upsert([make_record()])


@pytest.mark.parametrize("name", ["", "../escape", "a b", "x;y"])
def test_a_table_name_outside_the_safe_alphabet_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="table name"):
        LanceDBVectorStore(tmp_path, table=name)


def test_the_dimension_property_reads_an_existing_table(tmp_path: Path, make_record: RecordFactory) -> None:
    assert LanceDBVectorStore(tmp_path).dimension is None
    LanceDBVectorStore(tmp_path).upsert([make_record(dim=48)])
    assert LanceDBVectorStore(tmp_path).dimension == 48


def test_arrow_conversion_round_trips_records(full_record: RecordFactory) -> None:
    records = [full_record("r1"), full_record("r2", tenant=None, object=None, metadata={})]
    table = records_to_arrow(records, 32)
    assert table.schema == arrow_schema(32)
    back = arrow_to_records(table)
    assert [r.upload_id for r in back] == ["r1", "r2"]
    for got, want in zip(back, records, strict=True):
        np.testing.assert_array_equal(got.vector, want.vector)
        assert (got.object, got.tenant, got.metadata, got.moderation) == (
            want.object,
            want.tenant,
            want.metadata,
            want.moderation,
        )
        assert (got.created_at, got.indexed_at) == (want.created_at, want.indexed_at)


def _tenant_indexes(path: Path) -> list[str]:
    table = lancedb.connect(path).open_table("uploads")
    return [index.index_type for index in table.list_indices() if index.columns == ["tenant"]]


def test_the_tenant_column_is_indexed_from_the_first_write(tmp_path: Path, make_record: RecordFactory) -> None:
    store = LanceDBVectorStore(tmp_path)
    store.upsert([make_record("a-1", tenant="a")])
    assert _tenant_indexes(tmp_path) == ["BTree"]
    table = lancedb.connect(tmp_path).open_table("uploads")
    table.optimize()  # adds the rows written since the index was made to it
    assert "ScalarIndexQuery" in table.search().where("tenant IN ('a')").explain_plan(True)


def test_a_table_without_a_tenant_index_gets_one_when_opened(tmp_path: Path, make_record: RecordFactory) -> None:
    LanceDBVectorStore(tmp_path).upsert([make_record("a-1", tenant="a")])
    lancedb.connect(tmp_path).open_table("uploads").drop_index("tenant_idx")
    assert _tenant_indexes(tmp_path) == []
    assert LanceDBVectorStore(tmp_path).count(SearchFilters(scope=tenants("a"))) == 1
    assert _tenant_indexes(tmp_path) == ["BTree"]


def test_a_table_created_before_transcripts_gets_the_column_and_takes_new_records(
    tmp_path: Path, make_record: Callable[..., VectorRecord]
) -> None:
    old_schema = arrow_schema(8)
    old_schema = old_schema.remove(old_schema.get_field_index("transcript_json"))
    lancedb.connect(str(tmp_path)).create_table("uploads", schema=old_schema)

    store = LanceDBVectorStore(tmp_path, dimension=8)
    spoken = {"text": "our refund policy", "passages": [{"start_s": 0.0, "end_s": 2.0, "text": "our refund policy"}]}
    store.upsert([make_record("old-1", dim=8), make_record("new-1", dim=8, transcript=spoken)])
    back = store.get("new-1")
    assert back is not None and back.transcript == spoken
    assert store.get("old-1").transcript is None  # type: ignore[union-attr]


def test_fragments_are_sized_by_the_vector_columns() -> None:
    one_vector = arrow_schema(1024)
    two_vectors = arrow_schema(1024, parts=["audio"])
    assert row_bytes(two_vectors) - row_bytes(one_vector) == 1024 * 4
    assert target_rows_per_fragment(one_vector, 32 * 2**20) == 32 * 2**20 // row_bytes(one_vector)
    assert target_rows_per_fragment(one_vector, 1) == 1


def test_an_index_update_lance_refuses_rebuilds_the_vector_index_over_every_row(
    tmp_path: Path, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, ann_index_min_rows=300)
    store.upsert([make_record(f"ann-{i}") for i in range(300)])
    assert store.optimize().index_built is True
    store.upsert([make_record(f"later-{i}") for i in range(100)])
    # What lance answered at 1M rows; left as it was, no later row would ever be indexed.
    refusal = OSError("LanceError(Index): optimizing vector index: vector index segments do not share IVF centroids")
    real = DatasetOptimizer.optimize_indices
    calls: list[int] = []

    def refuse_once(self: DatasetOptimizer, **options: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise refusal
        real(self, **options)

    monkeypatch.setattr(DatasetOptimizer, "optimize_indices", refuse_once)

    assert store.optimize().index_built is True
    (name,) = _vector_indices(tmp_path)
    stats = lancedb.connect(tmp_path).open_table("uploads").index_stats(name)
    assert stats is not None and (stats.num_indexed_rows, stats.num_unindexed_rows) == (400, 0)
    assert len(calls) == 2  # the scalar indexes got their new rows after the rebuild


def test_the_index_cache_that_holds_an_ivf_flat_index_is_its_vectors_and_a_quarter() -> None:
    assert index_cache_needed_mb(1_000_000, 1024, 1) == 4883  # 3.9 GB of float32, + 25 %
    assert index_cache_needed_mb(1_000_000, 1024, 2) == 9766  # a part column is a second index
    assert index_cache_needed_mb(0, 1024, 1) == 0


def test_a_search_warns_with_the_setting_to_raise_when_the_ann_index_outgrows_the_cache(
    tmp_path: Path, make_record: RecordFactory, caplog: pytest.LogCaptureFixture
) -> None:
    records = [make_record(f"big-{i}", dim=256) for i in range(1200)]  # ~1.5 MB of index
    small = LanceDBVectorStore(tmp_path, compact_every_writes=0, ann_index_min_rows=300, index_cache_mb=1)
    small.upsert(records)
    small.optimize()
    with caplog.at_level("WARNING", logger="shared.vectors.lancedb"):
        assert small.search(records[0].vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
        small.search(records[1].vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
    (warning,) = [r.getMessage() for r in caplog.records if "index cache" in r.getMessage()]
    assert "OMNIBIND_VECTORS__INDEX_CACHE_MB=2 " in warning, "once per process, naming the size that fits"

    caplog.clear()
    big = LanceDBVectorStore(tmp_path, compact_every_writes=0, ann_index_min_rows=300, index_cache_mb=2)
    with caplog.at_level("WARNING", logger="shared.vectors.lancedb"):
        big.search(records[0].vector, k=1, filters=SearchFilters(scope=ALL_TENANTS))
    assert not [r for r in caplog.records if "index cache" in r.getMessage()]
