"""The embedded LanceDB store in the long run: old versions and files go, compaction does
not stop writers (nor the write that starts it: it runs in a child process), and writes
racing a compaction keep one row per id."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import lance
import lancedb
import psutil
import pytest

from shared.vectors.lancedb import LanceDBVectorStore
from shared.vectors.lancedb_maintenance import BACKGROUND_NICENESS, Maintenance, fragment_count, row_bytes
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord
from tests.support.waiting import wait_until

from .conftest import unit_vector

RecordFactory = Callable[..., VectorRecord]
REPO_ROOT = Path(__file__).resolve().parents[3]
# Only a deadlock breaker: every wait below ends on an event long before this.
HANG_S = 120


def _versions(path: Path) -> int:
    return len(list((path / "uploads.lance" / "_versions").glob("*.manifest")))


def _data_files(path: Path) -> int:
    return len(list((path / "uploads.lance" / "data").glob("*.lance")))


def _stored_ids(path: Path) -> list[str]:
    return list(lancedb.connect(path).open_table("uploads").to_arrow().column("upload_id").to_pylist())


@pytest.fixture
def compactor(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Starts a process that runs `LanceDBVectorStore.optimize` on `tmp_path` per `script`
    (Python run after `store` is made); it talks over stdin/stdout. Killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(script: str) -> subprocess.Popen[str]:
        code = textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            import lancedb.table
            from shared.vectors.lancedb import LanceDBVectorStore
            store = LanceDBVectorStore(Path({str(tmp_path)!r}), compact_every_writes=0, cleanup_older_than_s=1)
            """
        ) + textwrap.dedent(script)
        process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=HANG_S)


def test_many_small_writes_leave_a_bounded_number_of_versions_and_files(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    # Versions older than a millisecond go at every compaction: what remains is what the
    # writes since the last compaction added.
    store = LanceDBVectorStore(tmp_path, compact_every_writes=10, cleanup_older_than_s=0.001)
    for i in range(150):
        store.upsert([make_record(f"s-{i}-{j}") for j in range(1 + i % 3)])
        assert store.wait_for_maintenance(HANG_S)  # the write started it in the background
        assert _versions(tmp_path) <= 10 + 3
        assert _data_files(tmp_path) <= 10 + 2
    assert len(_stored_ids(tmp_path)) == sum(1 + i % 3 for i in range(150))


def _disk_by_kind(path: Path) -> dict[str, int]:
    """Bytes in the table directory: "live" (the data and index files the current version
    uses), "replaced" (data and index files it does not use) and "versions" (manifests,
    transaction and deletion files)."""
    root = path / "uploads.lance"
    dataset = lance.dataset(str(root))
    data = {file.path for fragment in dataset.get_fragments() for file in fragment.data_files()}
    indexes = {str(segment.uuid) for index in dataset.describe_indices() for segment in index.segments}
    found = {"live": 0, "replaced": 0, "versions": 0}
    for file in root.rglob("*"):
        if file.is_file():
            top, name = file.relative_to(root).parts[:2]
            used = (top == "data" and name in data) or (top == "_indices" and name in indexes)
            kind = "live" if used else "replaced" if top in ("data", "_indices") else "versions"
            found[kind] += file.stat().st_size
    return found


def test_what_a_compaction_replaced_leaves_the_disk_once_its_window_has_passed(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    # The index worker's shape: batches of 8-32 new records, compaction in the background.
    # Before, the files a compaction rewrote (the tail fragment, rewritten whole by every
    # compaction of a small table, and the small fragments merged into it) stayed until the
    # next compaction, and the soak measured 3.8x the data on disk at 5,000 uploads.
    store = LanceDBVectorStore(tmp_path, compact_every_writes=10, cleanup_older_than_s=1, lock_timeout_s=HANG_S)
    sizes = random.Random(5)
    written = 0
    for i in range(40):
        batch = [make_record(f"w-{i}-{j}") for j in range(sizes.randint(8, 32))]
        store.upsert(batch)
        written += len(batch)
        if i % 10 == 9:  # the tenth write started a compaction: four of them, one after another
            assert store.wait_for_maintenance(HANG_S)
            disk = _disk_by_kind(tmp_path)
            assert disk["replaced"] == 0
            # What else is kept: the manifests of the versions committed in the last window
            # (here the compaction's own: a few kB).
            assert disk["versions"] <= 64 * 1024
    assert len(_stored_ids(tmp_path)) == written


def _fragments(path: Path) -> int:
    return fragment_count(lancedb.connect(path).open_table("uploads"))


@pytest.fixture
def gated_compaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Background compactions wait until the returned file exists, then run as usual."""
    gate = tmp_path / "gate"
    real = Maintenance.command

    def command(self: Maintenance, directory: Path, table: str, lock_fd: int) -> list[str]:
        script = textwrap.dedent(
            f"""
            import sys, time
            from pathlib import Path
            deadline = time.monotonic() + {HANG_S}
            while not Path(sys.argv.pop(1)).exists() and time.monotonic() < deadline:
                sys.argv.insert(1, {str(gate)!r})
                time.sleep(0.01)  # a child process: it holds its compaction until the gate opens
            from shared.vectors.lancedb_maintenance import main
            sys.exit(main(sys.argv[1:]))
            """
        )
        # real: [python, "-P", "-m", module, *arguments]
        return [sys.executable, "-P", "-c", script, str(gate), *real(self, directory, table, lock_fd)[4:]]

    monkeypatch.setattr(Maintenance, "command", command)
    return gate


def test_the_write_that_starts_a_compaction_returns_before_it_ends(
    tmp_path: Path, make_record: RecordFactory, gated_compaction: Path
) -> None:
    # (A 1 s window: the child cleans up once more a window after compacting.)
    store = LanceDBVectorStore(tmp_path, compact_every_writes=5, cleanup_older_than_s=1, lock_timeout_s=HANG_S)
    for i in range(5):
        store.upsert([make_record(f"g-{i}")])  # the fifth starts the compaction, which waits at the gate

    assert not store.wait_for_maintenance(0)  # still running
    assert store.maintaining()
    assert _fragments(tmp_path) == 5
    # The child holds the compaction lock: nobody else compacts meanwhile, writers go on.
    assert LanceDBVectorStore(tmp_path, lock_timeout_s=0.01).optimize().skipped
    store.upsert([make_record("g-5")])
    store.delete(["g-0"])

    gated_compaction.touch()
    assert store.wait_for_maintenance(HANG_S)
    assert not store.maintaining()
    assert _fragments(tmp_path) <= 2  # g-5's may have come after the compaction read the table
    assert sorted(_stored_ids(tmp_path)) == [f"g-{i}" for i in range(1, 6)]
    assert not LanceDBVectorStore(tmp_path, lock_timeout_s=HANG_S).optimize().skipped  # the lock went with it


def test_a_failed_background_compaction_leaves_the_writes_and_the_next_one_runs(
    tmp_path: Path, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Maintenance.command
    monkeypatch.setattr(Maintenance, "command", lambda *args: [sys.executable, "-c", "raise SystemExit(3)"])
    store = LanceDBVectorStore(tmp_path, compact_every_writes=3, cleanup_older_than_s=0.001)
    for i in range(3):
        store.upsert([make_record(f"f-{i}")])
    assert store.wait_for_maintenance(HANG_S)
    assert _fragments(tmp_path) == 3

    monkeypatch.setattr(Maintenance, "command", real)
    for i in range(3, 6):
        store.upsert([make_record(f"f-{i}")])
    assert store.wait_for_maintenance(HANG_S)
    assert _fragments(tmp_path) == 1
    assert sorted(_stored_ids(tmp_path)) == [f"f-{i}" for i in range(6)]


def test_a_write_completes_while_another_process_is_compacting(
    tmp_path: Path, make_record: RecordFactory, compactor: Callable[[str], subprocess.Popen[str]]
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, lock_timeout_s=HANG_S)
    for i in range(20):
        store.upsert([make_record(f"before-{i}")])
    # The compaction announces itself, then waits under the compaction lock until told to go on.
    process = compactor(
        """
        from shared.vectors.lancedb_maintenance import Maintenance
        real = Maintenance.run
        def paused(self, table):
            print("compacting", flush=True)
            sys.stdin.readline()
            return real(self, table)
        Maintenance.run = paused
        print(store.optimize().fragments_after, flush=True)
        """
    )
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline().strip() == "compacting"

    store.upsert([make_record("during")])  # would wait for the lock until HANG_S if compaction held it
    store.delete(["before-3"])
    still_compacting = process.poll() is None
    skipped = LanceDBVectorStore(tmp_path, lock_timeout_s=0.01).optimize().skipped  # one compaction at a time

    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.wait(timeout=HANG_S) == 0
    assert still_compacting and skipped
    assert store.get("during") is not None and store.get("before-3") is None
    assert sorted(_stored_ids(tmp_path)) == sorted([f"before-{i}" for i in range(20) if i != 3] + ["during"])


def test_upserts_racing_repeated_compactions_keep_one_row_per_id_with_the_last_values(
    tmp_path: Path, make_record: RecordFactory, compactor: Callable[[str], subprocess.Popen[str]]
) -> None:
    ids = [f"r-{i:02d}" for i in range(30)]
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, lock_timeout_s=HANG_S)
    store.upsert([make_record(upload_id, tenant="round-0") for upload_id in ids])
    # Compacts again and again (a lost commit race is fine: the next one goes) until told to stop.
    process = compactor(
        """
        import select
        from shared.errors import VectorStoreUnavailable
        print("ready", flush=True)
        while not select.select([sys.stdin], [], [], 0)[0]:
            try:
                store.optimize()
            except VectorStoreUnavailable:
                pass
        """
    )
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline().strip() == "ready"
    last_round: dict[str, int] = {}
    for round_ in range(1, 61):
        chunk = [ids[(round_ * 7 + j) % len(ids)] for j in range(5)]
        store.upsert([make_record(upload_id, tenant=f"round-{round_}") for upload_id in chunk])
        last_round.update(dict.fromkeys(chunk, round_))
    process.stdin.write("stop\n")
    process.stdin.flush()
    assert process.wait(timeout=HANG_S) == 0

    assert Counter(_stored_ids(tmp_path)) == Counter(ids)
    for upload_id in ids:
        got = store.get(upload_id)
        assert got is not None and got.tenant == f"round-{last_round.get(upload_id, 0)}"


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # ended meanwhile, or a zombie
        return []


def test_threads_sharing_a_store_leave_no_compaction_running_and_lose_no_record(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    # The index worker runs a thread pool around one store: the threads race to start and
    # reap compactions; once the store has waited, none is left running, and every record stays.
    store = LanceDBVectorStore(tmp_path, compact_every_writes=3, cleanup_older_than_s=0.001, lock_timeout_s=HANG_S)

    def write(thread: int) -> None:
        for i in range(8):
            store.upsert([make_record(f"t-{thread}-{i}")])

    threads = [threading.Thread(target=write, args=(thread,)) for thread in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_S)
    assert store.wait_for_maintenance(HANG_S)

    running = [child for child in psutil.Process().children() if str(tmp_path) in " ".join(_cmdline(child))]
    assert running == []
    assert sorted(_stored_ids(tmp_path)) == sorted(f"t-{thread}-{i}" for thread in range(6) for i in range(8))


def _vector_index_segments(path: Path) -> int:
    table = lancedb.connect(path).open_table("uploads")
    total = 0
    for index in table.list_indices():
        if index.columns == ["vector"]:
            stats = table.index_stats(index.name)
            assert stats is not None
            total += int(stats.num_indices or 1)
    return total


def test_the_vector_index_is_rebuilt_once_optimize_has_added_more_than_16_segments(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0, ann_index_min_rows=300, ann_partitions=2)
    store.upsert([make_record(f"seg-{i}") for i in range(300)])
    assert store.optimize().index_built
    seen = []
    for round_ in range(20):  # each optimize adds the rows written since as one more segment
        store.upsert([make_record(f"seg-more-{round_}")])
        store.optimize()
        seen.append(_vector_index_segments(tmp_path))
    assert max(seen) <= 17, seen
    assert 1 in seen[seen.index(max(seen)) :] and max(seen) > 2, seen  # rebuilt as one, not only capped
    assert len(_stored_ids(tmp_path)) == 320


def test_the_store_starts_with_empty_caches_after_a_background_compaction_rebuilt_the_index(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(
        tmp_path, compact_every_writes=1, cleanup_older_than_s=0.001, ann_index_min_rows=300, ann_partitions=2
    )
    everyone = SearchFilters(scope=ALL_TENANTS)
    store.upsert([make_record(f"c-{i}") for i in range(300)])  # its compaction builds the index
    assert store.wait_for_maintenance(HANG_S)
    store.upsert([make_record("c-300")])  # adds a segment: the same index
    assert store.wait_for_maintenance(HANG_S)
    store.search(unit_vector(1), k=5, filters=everyone)
    assert store.cache_bytes() > 0

    store.upsert([make_record(f"d-{i}") for i in range(900)])  # 4x the rows: its compaction rebuilds
    assert store.wait_for_maintenance(HANG_S)
    assert store.cache_bytes() == 0
    assert len(store.search(unit_vector(1), k=5, filters=everyone)) == 5
    assert store.count(everyone) == 1201


def test_a_compaction_given_a_stale_table_compacts_the_newest_version(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0)
    for i in range(5):
        store.upsert([make_record(f"r-{i}")])
    # A table opened before a writer overwrote a row: compacting the version it holds would be
    # preempted by that Update ("Retryable commit conflict"); each attempt starts from the newest.
    stale = lancedb.connect(tmp_path).open_table("uploads")
    store.upsert([make_record("r-0", vector=unit_vector("r-0 rewritten"))])

    result = Maintenance(cleanup_older_than_s=1, ann_index_min_rows=10**9, key_index_min_rows=10**9).run(stale)

    assert result.fragments_after == 1
    assert sorted(_stored_ids(tmp_path)) == [f"r-{i}" for i in range(5)]
    assert store.get("r-0") is not None and store.get("r-0").vector @ unit_vector("r-0 rewritten") > 0.999  # type: ignore[union-attr]


def _data_file_sizes(path: Path) -> dict[str, int]:
    return {file.name: file.stat().st_size for file in (path / "uploads.lance" / "data").glob("*.lance")}


def test_a_compaction_rewrites_only_the_fragments_below_the_target_size(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0)
    table = lancedb.connect(tmp_path)
    for i in range(40):
        store.upsert([make_record(f"a-{i}-{j}") for j in range(10)])
    maintenance = Maintenance(
        cleanup_older_than_s=0.001,
        ann_index_min_rows=10**9,
        key_index_min_rows=10**9,
        fragment_target_bytes=100 * row_bytes(table.open_table("uploads").schema),
    )
    maintenance.run(table.open_table("uploads"))
    full = _data_file_sizes(tmp_path)
    assert len(full) == 4  # 400 rows in fragments of 100

    for i in range(7):
        store.upsert([make_record(f"b-{i}-{j}") for j in range(10)])
    maintenance.run(table.open_table("uploads"))

    after = _data_file_sizes(tmp_path)
    assert set(full) <= set(after)  # the full fragments are neither rewritten nor removed
    assert len(after) == len(full) + 1  # the 7 small writes became one fragment
    assert _fragments(tmp_path) == 5
    assert len(_stored_ids(tmp_path)) == 470


def test_a_commit_preempted_by_concurrent_writes_is_tried_again_from_the_newest_version(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    store = LanceDBVectorStore(tmp_path, compact_every_writes=0)
    store.upsert([make_record("p-0")])
    table = lancedb.connect(tmp_path).open_table("uploads")
    seen_versions: list[int] = []

    def preempted_twice(dataset: object) -> None:
        seen_versions.append(table.version)
        if len(seen_versions) <= 2:
            store.upsert([make_record(f"p-{len(seen_versions)}")])  # a write lands meanwhile
            raise OSError("Retryable commit conflict for version 3: preempted by concurrent transaction Update")

    assert Maintenance._retried(table, "compaction", preempted_twice) is True
    assert len(seen_versions) == 3 and seen_versions[0] < seen_versions[1] < seen_versions[2]

    def always_preempted(dataset: object) -> None:
        raise RuntimeError("Retryable commit conflict: preempted")

    assert Maintenance._retried(table, "compaction", always_preempted) is False
    with pytest.raises(OSError, match="disk full"):
        Maintenance._retried(table, "compaction", lambda dataset: (_ for _ in ()).throw(OSError("disk full")))


def test_the_background_compaction_runs_this_code_whatever_the_working_directory_holds(
    tmp_path: Path, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout in the working directory with a `shared` package of its own (another
    # version of omnibind) must not be what the compaction child imports.
    impostor = tmp_path / "cwd" / "shared" / "vectors"
    impostor.mkdir(parents=True)
    for package in (impostor.parent, impostor):
        (package / "__init__.py").write_text("")
    (impostor / "lancedb_maintenance.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path / "cwd")
    store = LanceDBVectorStore(tmp_path / "vectors", compact_every_writes=3, cleanup_older_than_s=0.001)
    for i in range(3):
        store.upsert([make_record(f"c-{i}")])
    assert store.wait_for_maintenance(HANG_S)
    assert _fragments(tmp_path / "vectors") == 1


def test_the_background_compaction_runs_below_the_priority_of_the_writers(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    # The child stays for its cleanup window (5 s here) after compacting: long enough to look.
    store = LanceDBVectorStore(tmp_path, compact_every_writes=3, cleanup_older_than_s=5)
    for i in range(3):
        store.upsert([make_record(f"n-{i}")])
    child = store._compaction
    assert child is not None
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = min(19, mine + BACKGROUND_NICENESS)
    wait_until(
        lambda: child.poll() is None and os.getpriority(os.PRIO_PROCESS, child.pid) == wanted,
        timeout_s=HANG_S,
        what=f"the compaction child at niceness {wanted}",
        poll_s=0.05,
    )
    assert store.wait_for_maintenance(HANG_S)
