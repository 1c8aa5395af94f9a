"""Upkeep of the embedded LanceDB table: compaction, old versions, indexes.

Split from `shared.vectors.lancedb` (the store) because it runs on its own schedule and
under its own lock. Why it looks the way it does (measured with bench/lancedb_soak.py):

- **Compaction rewrites only small fragments.** Every small write adds a table version and
  a data file. lancedb 0.40's `optimize` compacts *every* fragment below ~1M rows into one,
  i.e. it rewrites the whole table each time (1024-d: 4 GB per compaction at 1M rows), and
  the copy it replaced stays on disk until the versions that use it are cleaned up: the
  soak measured 2.2x the live data right after a compaction. So compaction goes through
  Lance's own `compact_files` (pylance) with a target fragment size
  (``fragment_target_bytes``; rows from the schema, `target_rows_per_fragment`): a fragment
  that reached it is never rewritten again, only the small ones written since are merged,
  and what a compaction duplicates on disk is bounded by that target, not by the table.
- **Old versions must go soon.** Versions kept for an hour kept a copy of what each
  compaction rewrote: 3,063 versions, 3,030 files and 282 MB after 3,000 writes (13,800
  rows of 32-d). Versions are deleted once older than ``cleanup_older_than_s`` (seconds,
  not an hour), and compaction runs at most once per that window.
- **Compaction does not hold the writers' lock.** Lance commits optimistically: a
  compaction that loses a race with a write is refused at commit (and tried again later),
  a write that loses against a compaction re-runs its merge on the new version. Writes of
  new rows never overlap the fragments a compaction rewrites. So writers keep writing while
  a compaction of any size runs; only one compaction runs at a time
  (``<table>.compact.lock``), and its mtime tells every process when the last one ran.
- **Nobody waits for it.** The store starts it in a short-lived child process (`main`,
  `Maintenance.start_in_background`): at 1M rows of 1024-d a compaction took 35-49 s, which
  the write that triggered it used to wait for (39 s); now that write takes ~0.2 s. The
  child also keeps the compaction's memory out of the worker. The parent hands the locked
  compaction lock to the child as an inherited descriptor, so the lock lives as long as
  the child.
- **The vector index is kept in one piece.** Each `optimize` adds the rows written since
  as another delta segment, which every search visits and the index cache keeps; past
  ``_INDEX_MAX_SEGMENTS`` the index is rebuilt.
- **What a compaction replaced goes one window after it.** The files a compaction rewrote
  stay referenced by the versions committed just before it (lance even commits one at its
  start, reserving fragment ids), so the cleanup that follows it in the same pass can never
  delete them: they used to go only at the next compaction, by when the one before had
  left its own copy too. A 5,000-upload soak of 32-d records held 18.1 MB for 4.74 MB of
  data (3.8x): up to two superseded copies of the table's tail fragment (below
  ``fragment_target_bytes`` every compaction rewrites it whole) plus the small fragments
  they merged. So the child, once done, waits ``cleanup_older_than_s`` (holding no table,
  memory handed back) and cleans up again: the same rule, applied once the replaced
  versions are old enough, so disk comes back to the live data plus the versions of the
  last window.
- **Long reads are not pinned.** A read that outlives the window while another process
  compacts can lose its version's files (searches are retried once; `iter_records` fails
  with `VectorStoreUnavailable`). Tags would pin versions, but lancedb 0.40's `optimize`
  then refuses to clean up at all ("tagged version(s) have been marked for cleanup").
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa

from shared.file_locks import LockTimeout, exclusive_lock, try_lock

if TYPE_CHECKING:
    from lance import LanceDataset
    from lancedb.index import IndexConfig
    from lancedb.table import Table

log = logging.getLogger(__name__)

VECTOR_COLUMN = "vector"
KEY_COLUMN = "upload_id"
KEY_INDEX = "upload_id_btree"
# The index name records the row count it was trained on, so that every process can tell
# when the table has outgrown its partitions.
_INDEX_PREFIX = "vector_ivf_flat_rows_"
_INDEX_REBUILD_GROWTH = 4
# Each `optimize` adds the rows written since as one more delta segment of the vector index
# (lancedb 0.40 does not merge them): 15 segments after 6,575 writes in the soak, each
# searched and cached separately. Past this many the index is rebuilt as one.
_INDEX_MAX_SEGMENTS = 16
# A compaction whose commit a concurrent write preempted is simply run again.
_RETRYABLE_CONFLICT = "Retryable commit conflict"
_COMPACT_ATTEMPTS = 5
# A compacted fragment's size (`OMNIBIND_VECTORS__COMPACT_FRAGMENT_MB`): what one compaction
# rewrites, and keeps twice on disk until cleanup, is bounded by it; larger fragments mean
# fewer files per search.
FRAGMENT_TARGET_BYTES = 4 * 2**20
# Bytes a row's non-vector columns take, roughly (ids, tenant, kind, metadata JSON).
_ROW_OVERHEAD_BYTES = 256
# The directory that holds the `shared` package: the background compaction imports it.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
# A background compaction needs only small caches: it reads each manifest once.
_CHILD_METADATA_CACHE_BYTES = 64 * 2**20
_CHILD_INDEX_CACHE_BYTES = 64 * 2**20
# The delayed cleanup starts this long after the window has passed since the compaction's
# last commit: lance compares version timestamps with its own clock reading.
_CLEANUP_MARGIN_S = 0.25


@dataclass(frozen=True, slots=True)
class OptimizeResult:
    """What one `LanceDBVectorStore.optimize` call did (all zero/False when it was skipped
    because another process was compacting)."""

    fragments_before: int
    fragments_after: int
    index_built: bool
    key_index_built: bool = False
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class Maintenance:
    """How the table is kept in shape (see the module docstring)."""

    cleanup_older_than_s: float
    ann_index_min_rows: int
    key_index_min_rows: int
    ann_partitions: int | None = None
    fragment_target_bytes: int = FRAGMENT_TARGET_BYTES

    def compact_lock_path(self, directory: Path, table: str) -> Path:
        return directory / f"{table}.compact.lock"

    def due(self, lock_path: Path) -> bool:
        """True when no compaction has started within the cleanup window (any process)."""
        try:
            last = lock_path.stat().st_mtime
        except FileNotFoundError:
            return True
        return time.time() - last >= self.cleanup_older_than_s

    @contextlib.contextmanager
    def compacting(self, lock_path: Path, *, wait_s: float) -> Iterator[bool]:
        """Hold the compaction lock (True), or yield False if another process holds it for
        longer than `wait_s`. Stamps the lock file's mtime: the start of the last compaction."""
        try:
            with exclusive_lock(lock_path, timeout_s=wait_s):
                os.utime(lock_path)
                yield True
        except LockTimeout:
            yield False

    def start_in_background(self, directory: Path, table: str) -> subprocess.Popen[bytes] | None:
        """Start `run` on `table` in a short-lived child process (see `main`) that holds the
        compaction lock until it exits, and return it; None when another process holds the
        lock. The caller does not wait: a write that triggers a compaction returns at once,
        and neither the compaction's time nor its memory lands in the calling process.
        Stamps the lock file's mtime (the start of the last compaction). Raises `OSError`
        when the child cannot be started."""
        lock_path = self.compact_lock_path(directory, table)
        handle = try_lock(lock_path)
        if handle is None:
            return None
        with handle:  # our copy of the descriptor; the child's copy keeps the lock held
            os.utime(lock_path)
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(_SOURCE_ROOT), os.environ.get("PYTHONPATH")])),
            }
            return subprocess.Popen(
                self.command(directory, table, handle.fileno()),
                stdin=subprocess.DEVNULL,
                pass_fds=(handle.fileno(),),
                env=env,
            )

    def command(self, directory: Path, table: str, lock_fd: int) -> list[str]:
        """The child's command line: `main` of this module with these settings."""
        # -P: the working directory is not put on the path, so the child imports this
        # `shared` (``_SOURCE_ROOT`` on PYTHONPATH), not one a checkout in the cwd holds.
        argv = [sys.executable, "-P", "-m", __name__, str(directory), table, "--lock-fd", str(lock_fd)]
        argv += ["--cleanup-older-than-s", repr(self.cleanup_older_than_s)]
        argv += ["--ann-index-min-rows", str(self.ann_index_min_rows)]
        argv += ["--key-index-min-rows", str(self.key_index_min_rows)]
        if self.ann_partitions is not None:
            argv += ["--ann-partitions", str(self.ann_partitions)]
        argv += ["--fragment-target-bytes", str(self.fragment_target_bytes)]
        return argv

    def run(self, table: Table) -> OptimizeResult:
        """Compact, delete old versions, update and build indexes. Needs the compaction lock,
        not the write lock. Raises what lancedb raises (the store translates it)."""
        fragments_before = fragment_count(table)
        rows = table.count_rows()
        indices = list(table.list_indices())
        key_index_built = self._ensure_key_index(table, rows, indices)
        target_rows = target_rows_per_fragment(table.schema, self.fragment_target_bytes)
        self._retried(table, "compaction", lambda ds: ds.optimize.compact_files(target_rows_per_fragment=target_rows))
        # Rows written since the index was built join it as a delta segment.
        index_refused = not self._update_indexes(table)
        self.clean_up(table)
        # Even when every compaction attempt lost to writers: a table without its vector
        # index would be scanned in full by every search.
        index_built = self._maintain_ann_index(table, rows, indices, rebuild=index_refused)
        if index_refused:  # the scalar indexes' new rows too, now that the vector index is whole
            self._update_indexes(table)
        return OptimizeResult(fragments_before, fragment_count(table), index_built, key_index_built)

    def clean_up(self, table: Table) -> None:
        """Delete the versions older than ``cleanup_older_than_s`` (never the latest) and the
        files only they referenced. Needs no lock: it commits nothing."""
        # Never 0: lancedb then also deletes the version a reader in another process
        # opened a moment ago.
        older_than = timedelta(seconds=max(self.cleanup_older_than_s, 0.001))
        table.checkout_latest()
        table.to_lance().cleanup_old_versions(older_than=older_than)

    def clean_up_after(self, directory: Path, table: str) -> None:
        """Wait until the versions committed before now are older than the cleanup window,
        then `clean_up` `table` in `directory`: what the compaction that just ended replaced
        is then no longer referenced by any kept version (see the module docstring)."""
        time.sleep(max(self.cleanup_older_than_s, 0.001) + _CLEANUP_MARGIN_S)
        self.clean_up(open_table(directory, table))

    def _update_indexes(self, table: Table) -> bool:
        """Add the rows written since to every index; False when Lance refused to (seen at 1M
        rows: "vector index segments do not share IVF centroids"), which left unchanged, would
        leave every later row out of the index for good, so the caller rebuilds it."""
        try:
            self._retried(table, "index update", lambda ds: ds.optimize.optimize_indices())
        except (OSError, RuntimeError) as exc:
            log.warning("lance refused to add new rows to the indexes (%s); rebuilding the vector index", exc)
            return False
        return True

    @staticmethod
    def _retried(table: Table, what: str, commit: Callable[[LanceDataset], object]) -> bool:
        """Run `commit` again when a concurrent write preempted its commit (lance's
        "Retryable commit conflict", which each attempt re-reads the newest version for);
        False if every attempt was preempted."""
        for attempt in range(1, _COMPACT_ATTEMPTS + 1):
            table.checkout_latest()
            try:
                commit(table.to_lance())
                return True
            except (OSError, RuntimeError) as exc:
                if _RETRYABLE_CONFLICT not in str(exc):
                    raise
                log.info("%s preempted by a concurrent write (attempt %d of %d)", what, attempt, _COMPACT_ATTEMPTS)
        return False

    def _ensure_key_index(self, table: Table, rows: int, indices: Sequence[IndexConfig]) -> bool:
        """Build the ``upload_id`` BTREE index once the table has ``key_index_min_rows``
        rows, unless it has one; True if it built it. (`optimize` then adds later rows.)"""
        from lancedb.index import BTree

        if rows < self.key_index_min_rows or any(KEY_COLUMN in index.columns for index in indices):
            return False
        table.create_index(KEY_COLUMN, config=BTree(), name=KEY_INDEX)
        log.info("built the %s index", KEY_COLUMN)
        return True

    def _maintain_ann_index(
        self, table: Table, rows: int, indices: Sequence[IndexConfig], *, rebuild: bool = False
    ) -> bool:
        """Build the vector index once the table is large enough, rebuild it once the table
        has outgrown it (or when `rebuild`); True if it did either."""
        from lancedb.index import IvfFlat

        if rows < self.ann_index_min_rows:
            return False
        current = [index.name for index in indices if VECTOR_COLUMN in index.columns]
        trained_rows = max((_trained_rows(name) for name in current), default=0)
        outgrown = rows >= _INDEX_REBUILD_GROWTH * trained_rows or _segments(table, current) > _INDEX_MAX_SEGMENTS
        if current and not outgrown and not rebuild:
            return False
        name = f"{_INDEX_PREFIX}{rows}"
        table.create_index(
            VECTOR_COLUMN,
            config=IvfFlat(distance_type="cosine", num_partitions=self.ann_partitions),
            name=name,
            replace=True,
        )
        for old in current:
            if old != name:
                table.drop_index(old)
        log.info("built the vector index over %d rows", rows)
        return True


def row_bytes(schema: pa.Schema) -> int:
    """About how many bytes a row of `schema` takes: its fixed-size vector columns (float32)
    plus a rough allowance for the other columns."""
    size = _ROW_OVERHEAD_BYTES
    for field in schema:
        if pa.types.is_fixed_size_list(field.type):
            size += field.type.list_size * field.type.value_type.bit_width // 8
    return size


def target_rows_per_fragment(schema: pa.Schema, target_bytes: int) -> int:
    """Rows of `schema` that make a fragment of about `target_bytes`."""
    return max(1, target_bytes // row_bytes(schema))


def fragment_count(table: Table) -> int:
    # Table.stats() is a plain dict in lancedb 0.40 (a TypedDict in its type hints).
    stats = cast("dict[str, Any]", table.stats())
    return int(stats["fragment_stats"]["num_fragments"])


def open_table(directory: Path, table: str) -> Table:
    """`table` in `directory` on a connection with the small caches maintenance needs."""
    import lancedb

    session = lancedb.Session(
        index_cache_size_bytes=_CHILD_INDEX_CACHE_BYTES, metadata_cache_size_bytes=_CHILD_METADATA_CACHE_BYTES
    )
    return lancedb.connect(directory, session=session).open_table(table)


def trim_heap() -> None:
    """Give glibc's free heap pages back to the system (`malloc_trim`); no-op elsewhere.
    lancedb allocates from many runtime threads, and glibc keeps what they free in per-thread
    arenas (see docs/vectors.md for what this returned in the soak)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _segments(table: Table, names: Sequence[str]) -> int:
    """How many segments (the build plus the deltas `optimize` added) the indexes `names` have."""
    total = 0
    for name in names:
        stats = table.index_stats(name)
        total += int(stats.num_indices or 1) if stats is not None else 1
    return total


def _trained_rows(index_name: str) -> int:
    """The row count an index of ours was built over (0 for an index someone else made)."""
    suffix = index_name.removeprefix(_INDEX_PREFIX)
    return int(suffix) if suffix != index_name and suffix.isdigit() else 0


BACKGROUND_NICENESS = 10  # added to the compaction child's niceness (os.nice)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of the background compaction (`Maintenance.start_in_background`): compact one
    table under the compaction lock that the parent handed over as ``--lock-fd``, then
    clean up once more when the cleanup window has passed (`Maintenance.clean_up_after`),
    still holding the lock; 0 when done, 1 when lancedb failed (logged; the next
    compaction tries again)."""
    parser = argparse.ArgumentParser(prog="python -m shared.vectors.lancedb_maintenance")
    parser.add_argument("directory", type=Path)
    parser.add_argument("table")
    parser.add_argument("--lock-fd", type=int, required=True, help="inherited descriptor holding the lock")
    parser.add_argument("--cleanup-older-than-s", type=float, required=True)
    parser.add_argument("--ann-index-min-rows", type=int, required=True)
    parser.add_argument("--key-index-min-rows", type=int, required=True)
    parser.add_argument("--ann-partitions", type=int, default=None)
    parser.add_argument("--fragment-target-bytes", type=int, default=FRAGMENT_TARGET_BYTES)
    args = parser.parse_args(argv)
    # Background work: on a busy machine the writers and searches of the workers come first
    # (at 1M rows a compaction child competing at equal priority stretched 8-record writes).
    os.nice(BACKGROUND_NICENESS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    os.fstat(args.lock_fd)  # fails loudly when started without the lock
    maintenance = Maintenance(
        cleanup_older_than_s=args.cleanup_older_than_s,
        ann_index_min_rows=args.ann_index_min_rows,
        key_index_min_rows=args.key_index_min_rows,
        ann_partitions=args.ann_partitions,
        fragment_target_bytes=args.fragment_target_bytes,
    )
    try:
        result = maintenance.run(open_table(args.directory, args.table))
        log.info("optimized %s in %s: %s", args.table, args.directory, result)
        # The table and its caches are gone with that line's temporaries; the wait below
        # should not hold the compaction's memory.
        gc.collect()
        trim_heap()
        maintenance.clean_up_after(args.directory, args.table)
    except (OSError, RuntimeError, ValueError):
        log.warning("background optimize of %s in %s failed", args.table, args.directory, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
