"""What an index worker's small upsert costs per row the ``upload_id`` index does not cover yet.

    PYTHONPATH=$PWD .venv/bin/python bench/lancedb_uncovered_rows.py --base 200000 --uncovered 50000 100000 200000

Loads `--base` rows of `--dim`-d through the store's own `upsert` with background compaction
off, runs one `optimize` (which indexes ``upload_id``
and the vectors), then for each `--uncovered` count adds rows up to that many past the index —
as bulk writes did between two compactions — and times `--writes` upserts of 8 existing
records; last, the same after adding the rows to the ``upload_id`` index alone (milliseconds:
what a writer could do between compactions; tried, not kept, see docs/vectors.md). Upserts
are `merge_insert` on ``upload_id``; their match step reads the rows the index does not
cover. Results:
bench/results/lancedb_uncovered_rows_<date>.{json,md}. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.report import write_report
from shared.events import Modality
from shared.vectors.lancedb import LanceDBVectorStore
from shared.vectors.records import VectorRecord

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_BATCH = 2000
SMALL_BATCH = 8


class Table:
    """A LanceDB store and the ids written so far (``r-0`` .. ``r-<rows-1>``)."""

    def __init__(self, store: LanceDBVectorStore, dim: int) -> None:
        self.store, self.dim, self.rows = store, dim, 0
        self.rng = np.random.default_rng(1)

    def vectors(self, n: int) -> np.ndarray:
        vectors = self.rng.standard_normal((n, self.dim)).astype("float32")
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def write(self, start: int, n: int) -> None:
        self.store.upsert(
            [VectorRecord(f"r-{start + i}", v, Modality.IMAGE, tenant="t") for i, v in enumerate(self.vectors(n))]
        )

    def grow_to(self, rows: int) -> None:
        for start in range(self.rows, rows, LOAD_BATCH):
            self.write(start, min(LOAD_BATCH, rows - start))
        self.rows = max(self.rows, rows)

    def small_upserts_ms(self, writes: int) -> list[float]:
        times = []
        for _ in range(writes):
            start = int(self.rng.integers(0, self.rows - SMALL_BATCH))
            t0 = time.perf_counter()
            self.write(start, SMALL_BATCH)
            times.append((time.perf_counter() - t0) * 1000)
        return times

    def key_indexes(self) -> tuple[Any, list[str]]:
        """The lancedb table and the names of its indexes on upload_id (bench: the store's own)."""
        table = self.store._open_table()
        assert table is not None
        return table, [index.name for index in table.list_indices() if index.columns == ["upload_id"]]

    def cover_keys(self) -> None:
        """Add every row to the upload_id index alone (the other indexes stay behind)."""
        table, names = self.key_indexes()
        table.to_lance().optimize.optimize_indices(index_names=names)

    def uncovered_rows(self) -> int:
        table, names = self.key_indexes()
        stats = table.index_stats(names[0]) if names else None
        return int(stats.num_unindexed_rows) if stats else self.rows

    def step(self, writes: int, **extra: float) -> dict[str, Any]:
        """Time `writes` small upserts now: one row of the report."""
        times = self.small_upserts_ms(writes)
        row = {
            "rows": self.rows,
            "uncovered_rows": self.uncovered_rows(),
            "p50_ms": round(float(np.percentile(times, 50)), 1),
            "max_ms": round(max(times), 1),
            **extra,
        }
        print(row, flush=True)
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=200_000, help="rows indexed by one optimize")
    parser.add_argument("--uncovered", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--writes", type=int, default=10, help="8-record upserts per step")
    args = parser.parse_args()
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="omnibind-uncovered-") as tmp:
        store = LanceDBVectorStore(Path(tmp), dimension=args.dim, compact_every_writes=0, key_index_min_rows=1)
        table = Table(store, args.dim)
        table.grow_to(args.base)
        store.optimize()
        for uncovered in [0, *args.uncovered]:
            table.grow_to(args.base + uncovered)
            steps.append(table.step(args.writes))
        t0 = time.perf_counter()
        table.cover_keys()
        steps.append(table.step(args.writes, key_index_update_s=round(time.perf_counter() - t0, 2)))
    report = {
        "benchmark": "lancedb_uncovered_rows",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": host_info(),
        "command": " ".join(sys.argv),
        "dim": args.dim,
        "writes_per_step": args.writes,
        "steps": steps,
    }
    lines = [
        f"# LanceDB: small upserts vs rows the upload_id index does not cover ({args.dim}-d)",
        "",
        f"- date: {report['date']}; machine: {report['machine']}",
        f"- command: `{report['command']}`",
        f"- {args.writes} upserts of {SMALL_BATCH} existing records per step; rows added in writes of "
        f"{LOAD_BATCH}, no compaction after the first optimize",
        "",
        "| rows | not covered by the upload_id index | upsert ms p50 | max | upload_id index update s |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {s['rows']:,} | {s['uncovered_rows']:,} | {s['p50_ms']} | {s['max_ms']} | "
            f"{s.get('key_index_update_s', '')} |"
            for s in steps
        ),
        "",
    ]
    write_report(RESULTS / f"lancedb_uncovered_rows_{dt.date.today().isoformat()}", report, "\n".join(lines))


if __name__ == "__main__":
    main()
