"""Embedded vector store: one LanceDB table in a local directory (the zero-setup default).

Guarantees, and how they are kept:

- **Idempotent, never duplicated.** An upsert is a ``merge_insert`` on ``upload_id``
  (matched: update all columns; not matched: insert). Lance does not stop two processes
  that insert the same new id at the same moment from both appending it (seen here: 302
  rows for 200 ids), so every write (create, upsert, delete) runs under an
  exclusive `flock` on ``<dir>/<table>.lock`` shared by all processes and threads of the
  host; the lock is the guarantee. (``upload_id`` is no longer declared an unenforced
  primary key: that made every small write store a 32 KB key filter twice, see
  `_create_table`.) Commit conflicts left over (another writer that does not take the
  lock, or a compaction) are retried a bounded number of times with jitter.
- **Writes that keep their cost as the table grows.** Without an index the match step of
  ``merge_insert`` scans the whole ``upload_id`` column: a write of 7 records cost a median
  24 ms of CPU at 100k rows and 95 ms at 1M here (bench/lancedb_writes.py, 2 cores). Once
  the table has ``key_index_min_rows`` rows, `optimize` builds a BTREE index on
  ``upload_id`` and from then on adds new rows to it, which turns the scan into lookups
  (38 ms at 1M). Below that the scan is cheaper: Lance looks up each fragment written
  since the last `optimize` on its own, so an indexed small table costs more per write.
- **Read-your-writes.** The connection uses ``read_consistency_interval=0``: every read
  checks for the newest table version, so a search right after an upsert that returned,
  in this or any other process, sees it.
- **Exact search while small.** Below ``ann_index_min_rows`` a search is a flat scan
  (exact cosine). From there on `optimize` builds an IVF_FLAT index (cosine, lancedb's
  default partitioning, full vectors: no quantisation error) and rebuilds it whenever the
  table has grown 4× since; searches probe at least `SEARCH_PROBES` partitions, and more
  when a narrow filter leaves fewer than k hits. Rows written after the last build are
  scanned exactly until `optimize` adds them to the index.
- **Fork-safe.** Nothing is opened in the constructor and lancedb is imported on first use;
  a process that finds itself forked (its pid changed) opens its own connection.

- **Extra vectors of a record** (`VectorRecord.parts`) are nullable vector columns
  ``part_<name>`` of the same table, added (all null) the first time a record brings a
  new name, under the write lock. A search runs once on ``vector`` and once on each part
  column (rows where it is null left out by the prefilter) and keeps each upload's best
  (`best_per_upload`). Only ``vector`` gets the ANN index: part columns are scanned
  exactly, which is what a search costs anyway until ``ann_index_min_rows``.

Every small write adds a table version and a data fragment; `optimize` compacts them and
deletes versions older than ``cleanup_older_than_s`` (10 s). The store starts it itself after
``compact_every_writes`` writes or ``compact_every_rows`` upserted rows of one process (rows
the ``upload_id`` index does not cover yet slow every upsert), at most once per that window across all
processes, in a short-lived child process that holds the compaction lock (not the write
lock) and, one window later, cleans up again so that what the compaction replaced leaves
the disk then; the write that starts it returns at once (see
`shared.vectors.lancedb_maintenance`).
Each process connects with bounded caches (``index_cache_mb``, ``metadata_cache_mb``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
import pyarrow as pa

from shared.errors import ConfigError, VectorStoreUnavailable
from shared.file_locks import LockTimeout, exclusive_lock
from shared.vectors.lancedb_maintenance import KEY_INDEX, Maintenance, OptimizeResult, trim_heap
from shared.vectors.lancedb_rows import (
    DISTANCE_COLUMN,
    KEY_COLUMN,
    PART_PREFIX,
    TENANT_COLUMN,
    TENANT_INDEX,
    VECTOR_COLUMN,
    arrow_schema,
    arrow_to_records,
    filter_expr,
    index_cache_needed_mb,
    part_field,
    part_names,
    records_to_arrow,
)
from shared.vectors.properties import PROPERTIES, Kind
from shared.vectors.records import MAIN_PART, SearchFilters, SearchHit, VectorRecord, best_per_upload
from shared.vectors.validation import query_vector, records_dimension, unique_by_upload_id

if TYPE_CHECKING:
    from lancedb import Session
    from lancedb.db import DBConnection
    from lancedb.query import LanceVectorQueryBuilder
    from lancedb.table import Table

    from shared.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# KEY_INDEX and OptimizeResult live in lancedb_maintenance, the row format in lancedb_rows;
# importers know them from here.
__all__ = [
    "KEY_INDEX",
    "NEVER",
    "LanceDBVectorStore",
    "OptimizeResult",
    "arrow_schema",
    "arrow_to_records",
    "index_cache_needed_mb",
    "records_to_arrow",
]

# Partitions an indexed search scans at least. Measured here (2 cores) on 100k clustered
# 1024-d vectors: default partitioning, 20 or 50 probes -> recall@10 1.0 in 19-22 ms, where
# a flat scan takes 200-430 ms; 316 partitions (√rows) -> recall 0.64-0.74, so we keep the
# default.
SEARCH_PROBES = 50
# No ANN index / no key index: thresholds no table reaches.
NEVER = 2**62
# Keeps `upload_id IN (...)` filters to a sane length.
_IDS_PER_STATEMENT = 1000
_CACHE_CHECK_EVERY_S = 600.0  # how often a searching process re-checks that the ANN index fits its cache
# Lance reports lost optimistic-concurrency races with these words; they are safe to retry.
_RETRYABLE = re.compile(r"commit conflict|concurrent|retry", re.IGNORECASE)
# A read that lost its version's files to another process's cleanup (it opened the version
# just before a compaction superseded it); reading again opens the newest version.
_VANISHED = re.compile(r"not found|no such file", re.IGNORECASE)


class LanceDBVectorStore:
    """`VectorStore` on one LanceDB table under `path` (see the module docstring).

    `dimension` fixes the vector dimension up front; otherwise the first write (or the
    existing table) does. `ann_partitions` overrides lancedb's choice of IVF partitions
    (tests use it to get many partitions from few rows).

    Raises, from any method: `ConfigError` when a vector's dimension is not the table's;
    `VectorStoreUnavailable` when the directory cannot be used or the write lock stays
    held for `lock_timeout_s`.
    """

    def __init__(
        self,
        path: Path,
        *,
        table: str = "uploads",
        dimension: int | None = None,
        compact_every_writes: int = 100,
        compact_every_rows: int = 10_000,
        cleanup_older_than_s: float = 10.0,
        compact_fragment_mb: float = 4.0,
        ann_index_min_rows: int = 20_000,
        ann_partitions: int | None = None,
        lock_timeout_s: float = 60.0,
        write_attempts: int = 5,
        key_index_min_rows: int = 100_000,
        index_cache_mb: int = 512,
        metadata_cache_mb: int = 64,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", table):
            raise ConfigError(f"lancedb table name {table!r} must be letters, digits, '_', '-', '.'")
        self._path = Path(path)
        self._table_name = table
        self._dimension = dimension
        self._compact_every_writes = compact_every_writes
        self._compact_every_rows = compact_every_rows
        self._maintenance = Maintenance(
            cleanup_older_than_s=cleanup_older_than_s,
            ann_index_min_rows=ann_index_min_rows,
            key_index_min_rows=key_index_min_rows,
            ann_partitions=ann_partitions,
            fragment_target_bytes=max(1, int(compact_fragment_mb * 2**20)),
        )
        self._cache_bytes = (index_cache_mb * 2**20, metadata_cache_mb * 2**20)
        self._lock_timeout_s = lock_timeout_s
        self._write_attempts = max(1, write_attempts)
        self._guard = threading.Lock()
        self._pid: int | None = None
        self._db: DBConnection | None = None
        self._session: Session | None = None
        self._table: Table | None = None
        self._writes_since_optimize = 0
        self._rows_since_optimize = 0
        self._compaction: subprocess.Popen[bytes] | None = None
        # Writers of a thread pool share one store: one of them starts and reaps a compaction.
        self._compaction_guard = threading.Lock()
        self._vector_indexes: frozenset[str] | None = None
        self._cache_checked_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, dimension: int | None = None) -> LanceDBVectorStore:
        vectors = settings.vectors
        return cls(
            settings.vectors_path,
            table=vectors.table,
            dimension=dimension or vectors.dimension,
            compact_every_writes=vectors.compact_every_writes,
            compact_every_rows=vectors.compact_every_rows,
            cleanup_older_than_s=vectors.cleanup_older_than_s,
            compact_fragment_mb=vectors.compact_fragment_mb,
            ann_index_min_rows=vectors.ann_index_min_rows,
            key_index_min_rows=vectors.key_index_min_rows,
            lock_timeout_s=vectors.lock_timeout_s,
            index_cache_mb=vectors.index_cache_mb,
            metadata_cache_mb=vectors.metadata_cache_mb,
        )

    def __repr__(self) -> str:
        return f"LanceDBVectorStore(path={str(self._path)!r}, table={self._table_name!r})"

    @property
    def dimension(self) -> int | None:
        """The vector dimension of the store: configured, or read from the existing table."""
        if self._dimension is None:
            self._open_table()
        return self._dimension

    # -- the VectorStore port --------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or overwrite `records` by upload id in one commit (all or nothing).

        Several records with one upload id: the last wins. Raises `PermanentError`
        (``invalid_vector``/``invalid_record``) for a bad record, `ConfigError` for a
        dimension that is not the table's, `VectorStoreUnavailable` for I/O trouble.
        """
        if not records:
            return
        batch = unique_by_upload_id(records)
        dim = records_dimension(batch, self.dimension, store=self._describe(), hint=self._hint())
        with self._write_lock():
            table = self._open_table()
            if table is None:  # (not `or`: a Table's truth value is its row count)
                table = self._create_table(dim)
            # Another process may have created the table with another dimension meanwhile.
            records_dimension(batch[:1], self._dimension, store=self._describe(), hint=self._hint())
            columns = self._ensure_part_columns(table, {name for record in batch for name in record.parts}, dim)
            data = records_to_arrow(batch, dim, columns)
            self._with_retries(
                "upsert",
                lambda: (
                    table.merge_insert(KEY_COLUMN)
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    # lancedb counts a null vector as a bad one; a null part column is "no such
                    # part", and every vector given was checked by `records_dimension` above.
                    .execute(data, on_bad_vectors="null")
                ),
            )
        self._after_write(rows=len(batch))

    def get(self, upload_id: str) -> VectorRecord | None:
        from lancedb.expr import col, lit

        table = self._open_table()
        if table is None:
            return None
        found = self._reading(lambda: table.search().where(col(KEY_COLUMN) == lit(upload_id)).limit(1).to_arrow())
        records = arrow_to_records(found)
        return records[0] if records else None

    def delete(self, upload_ids: Sequence[str]) -> int:
        """Delete the records of `upload_ids`; returns how many existed."""
        from lancedb.expr import col

        ids = list(dict.fromkeys(upload_ids))
        if not ids or self._open_table() is None:
            return 0
        deleted = 0
        with self._write_lock():
            table = self._open_table()
            assert table is not None  # tables are never dropped by the store
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                chunk = ids[start : start + _IDS_PER_STATEMENT]
                result = self._with_retries("delete", functools.partial(table.delete, col(KEY_COLUMN).isin(chunk)))
                # lancedb's type hints lag its DeleteResult, which has carried the count since 0.2x.
                deleted += int(result.num_deleted_rows)  # type: ignore[attr-defined]
        self._after_write()
        return deleted

    def search(self, vector: np.ndarray, *, k: int = 10, filters: SearchFilters) -> list[SearchHit]:
        """The `k` nearest records by cosine similarity (score = 1 - cosine distance), best first.

        Filters are applied before the nearest-neighbour step (prefilter), so `k` hits come
        back whenever `k` records match.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        table = self._open_table()
        if table is None:
            return []
        query = query_vector(vector, self._dimension, store=self._describe(), hint=self._hint())
        self._check_index_cache(table)
        expr = filter_expr(filters)
        sql = expr.to_sql() if expr is not None else None
        targets = [MAIN_PART] if filters.parts is None or MAIN_PART in filters.parts else []
        targets += [name for name in part_names(table.schema) if filters.parts is None or name in filters.parts]
        hits: list[SearchHit] = []
        for part in targets:
            hits += self._search_column(table, query, k, part, sql)
        return best_per_upload(hits, k) if len(targets) > 1 else hits

    def _check_index_cache(self, table: Table) -> None:
        """Warn, at most every ``_CACHE_CHECK_EVERY_S`` per process, when the ANN indexes no
        longer fit the index cache: searches then take seconds instead of tens of ms, and
        only the setting fixes it."""
        now = time.monotonic()
        if self._cache_checked_at is not None and now - self._cache_checked_at < _CACHE_CHECK_EVERY_S:
            return
        self._cache_checked_at = now
        rows = int(self._reading(table.count_rows))
        if rows < self._maintenance.ann_index_min_rows or self._dimension is None:
            return  # exact search: there is no ANN index to cache
        needed = index_cache_needed_mb(rows, self._dimension, 1 + len(part_names(table.schema)))
        have = self._cache_bytes[0] // 2**20
        if needed > have:
            log.warning(
                "%s: the vector index holds ~%d MB (%d rows of %d-d) but the index cache is %d MB, so "
                "searches reload it from disk (seconds each at 1M rows); set OMNIBIND_VECTORS__INDEX_CACHE_MB=%d "
                "or more in every process that searches (docs/vectors.md, Memory)",
                self._describe(),
                needed,
                rows,
                self._dimension,
                have,
                needed,
            )

    def _search_column(self, table: Table, query: np.ndarray, k: int, part: str, sql: str | None) -> list[SearchHit]:
        """The `k` nearest records by the vector `part` (`MAIN_PART` or a part name)."""
        column = VECTOR_COLUMN if part == MAIN_PART else PART_PREFIX + part
        builder = cast("LanceVectorQueryBuilder", table.search(query, vector_column_name=column))
        # Probes only matter once there is an index; maximum 0 = "keep probing until k hits".
        builder = builder.distance_type("cosine").minimum_nprobes(SEARCH_PROBES).maximum_nprobes(0).limit(k)
        if part != MAIN_PART:  # rows without this part have a null there
            # (part names are checked identifiers: safe to put into SQL text)
            present = f"{column} IS NOT NULL"
            sql = present if sql is None else f"({sql}) AND {present}"
        if sql is not None:
            builder = builder.where(sql, prefilter=True)
        found = self._reading(builder.to_arrow)
        distances = found.column(DISTANCE_COLUMN).to_pylist() if found.num_rows else []
        records = arrow_to_records(found)
        return [SearchHit(record, 1.0 - float(d), part) for record, d in zip(records, distances, strict=True)]

    def count(self, filters: SearchFilters) -> int:
        table = self._open_table()
        if table is None:
            return 0
        expr = filter_expr(filters)
        sql = expr.to_sql() if expr is not None else None
        return int(self._reading(lambda: table.count_rows(sql)))

    def iter_records(self, batch_size: int = 256) -> Iterator[VectorRecord]:
        """Every record, vectors included, read from one table version (a consistent snapshot)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        table = self._open_table()
        if table is None:
            return
        # One version throughout. Cleanup may delete it under an iteration that outlives
        # ``cleanup_older_than_s`` while others compact: that ends in VectorStoreUnavailable.
        # (Tagging the version would keep it, but lancedb's optimize then refuses to clean up.)
        with self._translated("iterate"):
            for batch in table.search().limit(None).to_batches(batch_size):
                yield from arrow_to_records(pa.Table.from_batches([batch]))

    def close(self) -> None:
        """Drop this process's handles; a later call reopens them."""
        with self._guard:
            self._db = None
            self._session = None
            self._table = None
            self._pid = None

    def wait_for_maintenance(self, timeout_s: float | None = None) -> bool:
        """Wait until the background compaction this process started (if any) has ended;
        True when none is left running. Raises nothing."""
        compaction = self._compaction
        if compaction is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                compaction.wait(timeout=timeout_s)
        with self._compaction_guard:
            return self._reap_compaction()

    def maintaining(self) -> bool:
        """Whether a background compaction this process started is running now."""
        compaction = self._compaction
        return compaction is not None and compaction.poll() is None

    def cache_bytes(self) -> int:
        """Bytes this process's lancedb session caches hold now (0 before the first use)."""
        return int(self._session.size_bytes) if self._session is not None else 0

    # -- maintenance -------------------------------------------------------------------

    def optimize(self) -> OptimizeResult:
        """Compact small fragments, delete versions older than ``cleanup_older_than_s``, add
        the rows written since to the indexes, build the ``upload_id`` index once the table
        has ``key_index_min_rows`` rows and the ANN index once it has ``ann_index_min_rows``.

        Does not take the write lock: writers go on meanwhile (Lance resolves the commits).
        Waits up to ``lock_timeout_s`` while another process compacts, then returns a
        result with ``skipped=True``. Safe to call from any process.
        """
        table = self._open_table()
        if table is None:
            return OptimizeResult(0, 0, False)
        return self._compact(table, wait_s=self._lock_timeout_s)

    # -- internals -----------------------------------------------------------------------

    def _connection(self) -> DBConnection:
        with self._guard:
            if self._db is None or self._pid != os.getpid():
                import lancedb  # lazily: importing it starts a thread, which a fork would lose

                try:
                    self._path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise VectorStoreUnavailable(f"cannot create the vector store dir {self._path}: {exc}") from exc
                # read_consistency_interval=0: every read checks for the newest version.
                # A bounded session: lance's default caches (GBs) fill with the metadata of
                # every version read, which grew each worker by ~190 MB per 1,000 writes.
                index_bytes, metadata_bytes = self._cache_bytes
                session = lancedb.Session(index_cache_size_bytes=index_bytes, metadata_cache_size_bytes=metadata_bytes)
                self._db = lancedb.connect(self._path, read_consistency_interval=timedelta(0), session=session)
                self._session = session
                self._table = None
                if self._pid is not None and self._pid != os.getpid():
                    self._compaction = None  # a forked child does not own its parent's compaction
                self._pid = os.getpid()
            return self._db

    def _open_table(self) -> Table | None:
        """The table, or None while nobody has written yet. Learns/checks its dimension."""
        db = self._connection()
        if self._table is not None:
            return self._table
        try:
            table = db.open_table(self._table_name)
        except ValueError:  # "Table '...' was not found"
            return None
        except OSError as exc:
            raise VectorStoreUnavailable(f"cannot open {self._describe()}: {exc}") from exc
        self._adopt(table)
        return table

    def _create_table(self, dim: int) -> Table:
        """Create the table (caller holds the write lock, so no other process races us)."""
        db = self._connection()
        with self._translated("create table"):
            # No unenforced primary key: with one, lance stores a 32 KB key filter in every
            # version's transaction file and manifest (66 KB per small write; 24 of the 38 MB
            # a 4,583-row 32-d table took in the soak). The write lock keeps ids unique.
            table = db.create_table(self._table_name, schema=arrow_schema(dim), exist_ok=True)
        log.info("created %s (dimension %d)", self._describe(), dim)
        self._adopt(table)
        return table

    def _ensure_part_columns(self, table: Table, wanted: set[str], dim: int) -> list[str]:
        """Every part column of the table after adding those of `wanted` it lacks (caller
        holds the write lock). Existing rows read null there: they have no such part."""
        have = part_names(table.schema)
        missing = sorted(wanted - set(have))
        if missing:
            with self._translated("add part columns"):
                table.add_columns([part_field(name, dim) for name in missing])
            log.info(
                "added vector columns %s to %s", ", ".join(PART_PREFIX + name for name in missing), self._describe()
            )
        return sorted(set(have) | wanted)

    def _adopt(self, table: Table) -> None:
        vector_type = table.schema.field(VECTOR_COLUMN).type
        table_dim = int(vector_type.list_size)
        if self._dimension is not None and self._dimension != table_dim:
            raise ConfigError(
                f"{self._describe()} holds vectors of dimension {table_dim}, but dimension "
                f"{self._dimension} is configured; {self._hint()}"
            )
        self._dimension = table_dim
        self._add_missing_columns(table)
        self._table = table
        self._ensure_tenant_index(table)

    def _add_missing_columns(self, table: Table) -> None:
        """A table created before a JSON property existed (``transcript_json``) gets it as an
        all-null string column, so rows of the current schema can be written to it."""
        names = set(table.schema.names)
        missing = [spec.name for spec in PROPERTIES if spec.kind is Kind.JSON and spec.name not in names]
        if missing:
            with self._translated("add columns"):
                table.add_columns({name: "CAST(NULL AS STRING)" for name in missing})
            log.info("added columns %s to %s", ", ".join(missing), self._describe())

    def _ensure_tenant_index(self, table: Table) -> None:
        """Index the tenant column (a table created before that index existed gets it on its
        first open). Idempotent; a failure only costs search speed, so it is logged."""
        from lancedb.index import BTree

        try:
            if any(TENANT_COLUMN in index.columns for index in table.list_indices()):
                return
            table.create_index(TENANT_COLUMN, config=BTree(), name=TENANT_INDEX)
        except (OSError, RuntimeError, ValueError):
            log.warning("could not index the tenant column of %s", self._describe(), exc_info=True)
            return
        log.info("built the %s index of %s", TENANT_COLUMN, self._describe())

    def _after_write(self, rows: int = 0) -> None:
        """Start a background compaction after ``compact_every_writes`` writes or
        ``compact_every_rows`` upserted rows of this process (0 = that trigger off; no
        background compaction when ``compact_every_writes`` is 0), unless some process
        compacted within the cleanup window (which keeps at most two copies on disk) or is
        compacting now. Runs after the write lock is released and does not wait for the
        compaction (`wait_for_maintenance` does)."""
        with self._compaction_guard:
            self._start_compaction_if_due(rows)

    def _start_compaction_if_due(self, rows: int) -> None:
        self._writes_since_optimize += 1
        self._rows_since_optimize += rows
        finished = self._reap_compaction()
        if not self._compact_every_writes:
            return
        # Bulk writes reach the rows first: each row the upload_id index does not cover yet
        # is read in full by every upsert's match step (docs/vectors.md, "Upserts at scale").
        many_rows = 0 < self._compact_every_rows <= self._rows_since_optimize
        if self._writes_since_optimize < self._compact_every_writes and not many_rows:
            return
        if not finished or not self._maintenance.due(self._compact_lock_path()):
            return
        self._writes_since_optimize = 0
        self._rows_since_optimize = 0
        try:
            self._compaction = self._maintenance.start_in_background(self._path, self._table_name)
        except OSError:
            # The write itself is committed; a compaction that cannot start only costs read
            # speed and disk until a later write starts one.
            log.warning("could not start a background optimize of %s", self._describe(), exc_info=True)

    def _reap_compaction(self) -> bool:
        """True when no background compaction of this process is running (a finished one
        is reaped, and logged if it failed). Caller holds ``_compaction_guard``."""
        compaction = self._compaction
        if compaction is None:
            return True
        code = compaction.poll()
        if code is None:
            return False
        self._compaction = None
        if code != 0:
            log.warning("background optimize of %s exited with %d", self._describe(), code)
        else:
            self._drop_caches_after_an_index_rebuild()
        # The compaction's caches and buffers lived in the child; what this process freed
        # since goes back to the system rather than staying in glibc's arenas.
        trim_heap()
        return True

    def _drop_caches_after_an_index_rebuild(self) -> None:
        """Start a fresh session (empty caches) when the vector index was rebuilt: the old
        index's pages are never read again, yet stay in the index cache until it is full
        (soak: 102 -> 121 MB over 2,000 writes after a rebuild, on the way to 512 MB)."""
        table = self._table
        if table is None:
            return
        try:
            names = frozenset(index.name for index in table.list_indices() if VECTOR_COLUMN in index.columns)
        except (OSError, RuntimeError, ValueError):
            return  # the next reaped compaction looks again
        if self._vector_indexes is not None and names != self._vector_indexes:
            log.info("vector index of %s rebuilt; starting with empty caches", self._describe())
            self.close()
        self._vector_indexes = names

    def _compact(self, table: Table, *, wait_s: float) -> OptimizeResult:
        with self._maintenance.compacting(self._compact_lock_path(), wait_s=wait_s) as held:
            if not held:
                return OptimizeResult(0, 0, False, skipped=True)
            with self._translated("optimize"):
                result = self._maintenance.run(table)
        log.info("optimized %s: %s", self._describe(), result)
        return result

    def _compact_lock_path(self) -> Path:
        self._connection()  # creates the directory the lock file lives in
        return self._maintenance.compact_lock_path(self._path, self._table_name)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        self._connection()  # creates the directory the lock file lives in
        lock_path = self._path / f"{self._table_name}.lock"
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(exclusive_lock(lock_path, timeout_s=self._lock_timeout_s))
            except LockTimeout as exc:
                raise VectorStoreUnavailable(f"{self._describe()}: another writer holds the lock ({exc})") from exc
            except OSError as exc:
                raise VectorStoreUnavailable(f"cannot lock {lock_path}: {exc}") from exc
            yield

    def _with_retries(self, action: str, operation: Callable[[], T]) -> T:
        """Run a write; retry Lance commit conflicts with jittered backoff, translate the rest."""
        for attempt in range(1, self._write_attempts + 1):
            try:
                return operation()
            except (RuntimeError, OSError) as exc:
                if not _RETRYABLE.search(str(exc)) or attempt == self._write_attempts:
                    raise VectorStoreUnavailable(f"{action} on {self._describe()} failed: {exc}") from exc
                delay_s = 0.02 * 2**attempt * (0.5 + random.random())
                log.info("%s on %s lost a commit race (attempt %d); retrying", action, self._describe(), attempt)
                time.sleep(delay_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _reading(self, operation: Callable[[], T]) -> T:
        """Run a read; once more if its version's files vanished (another process's cleanup
        removed a version this read opened just before a compaction superseded it)."""
        with self._translated("read"):
            try:
                return operation()
            except (RuntimeError, OSError) as exc:
                if not _VANISHED.search(str(exc)):
                    raise
                log.info("a read of %s lost its version to a cleanup; reading again", self._describe())
                return operation()

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except (RuntimeError, OSError) as exc:
            raise VectorStoreUnavailable(f"{action} on {self._describe()} failed: {exc}") from exc

    def _describe(self) -> str:
        return f"lancedb table {self._table_name!r} in {self._path}"

    def _hint(self) -> str:
        return "use another table (OMNIBIND_VECTORS__TABLE) or data dir (OMNIBIND_VECTORS__PATH / OMNIBIND_DATA_DIR)"
