"""Writes and searches on an existing LanceDB table, with a chosen index cache.

    PYTHONPATH=$PWD .venv/bin/python bench/lancedb_table_probe.py DIR --table bench --cache-mb 512 --writes 300

Made to look into a table `bench/vector_stores.py` left (1M rows of 1024-d; `--load` builds
one like it first when DIR holds none): upserts of 8 records over existing ids through the
store's own `upsert` (background compactions on, as in the index worker), then 25 unfiltered
and 25 tenant-filtered searches (k = 10). Prints one JSON line, and before it each write over
`--slow-ms` with the table version it ended at and whether a compaction child was running or
how long ago the last one started. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.events import Modality
from shared.vectors.lancedb import LanceDBVectorStore
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord, tenants


def load(store: LanceDBVectorStore, rows: int, dim: int) -> None:
    rng = np.random.default_rng(rows)
    for start in range(0, rows, 1000):
        vectors = rng.standard_normal((min(1000, rows - start), dim)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert(
            [
                VectorRecord(f"bench-{start + i}", vector, Modality.IMAGE, tenant=f"t{(start + i) % 10}")
                for i, vector in enumerate(vectors)
            ]
        )
        if start % 100_000 == 0:
            print(f"loaded {start:,}", file=sys.stderr, flush=True)
    store.wait_for_maintenance(600)
    store.optimize()


def maintenance_state(store: LanceDBVectorStore, args: argparse.Namespace) -> dict[str, object]:
    """The table's version, and the compaction: running now, or started how long ago."""
    child = store._compaction
    lock = args.directory / f"{args.table}.compact.lock"
    started = time.time() - lock.stat().st_mtime if lock.exists() else None
    table = store._open_table()
    return {
        "version": table.version if table is not None else None,
        "child_running": child is not None and child.poll() is None,
        "last_compaction_started_s_ago": round(started, 1) if started is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--table", default="bench")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=1_000_000, help="ids bench-0 .. bench-<rows-1> exist")
    parser.add_argument("--cache-mb", type=int, default=512)
    parser.add_argument("--metadata-cache-mb", type=int, default=64)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--load", action="store_true", help="first load --rows rows when the table does not exist")
    parser.add_argument("--slow-ms", type=float, default=500.0)
    args = parser.parse_args()
    store = LanceDBVectorStore(
        args.directory,
        table=args.table,
        dimension=args.dim,
        index_cache_mb=args.cache_mb,
        metadata_cache_mb=args.metadata_cache_mb,
    )
    rng = np.random.default_rng(args.cache_mb)
    if args.load and not (args.directory / f"{args.table}.lance").exists():
        load(store, args.rows, args.dim)

    def unit(n: int) -> np.ndarray:
        vectors = rng.standard_normal((n, args.dim)).astype("float32")
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    out: dict[str, object] = {"index_cache_mb": args.cache_mb}
    writes = []
    for _ in range(args.writes):
        start = int(rng.integers(0, args.rows - 8))
        batch = [
            VectorRecord(f"bench-{start + i}", vector, Modality.IMAGE, tenant=f"t{(start + i) % 10}")
            for i, vector in enumerate(unit(8))
        ]
        t0 = time.perf_counter()
        store.upsert(batch)
        writes.append((time.perf_counter() - t0) * 1000)
        if writes[-1] > args.slow_ms:
            print(json.dumps({"slow_write": len(writes), "ms": round(writes[-1]), **maintenance_state(store, args)}))
    if writes:
        out["upsert_ms"] = {p: round(float(np.percentile(writes, q)), 1) for p, q in (("p50", 50), ("p95", 95))}
        out["upsert_max_ms"] = round(max(writes), 1)
    cases = (("no_filter", SearchFilters(scope=ALL_TENANTS)), ("tenant_filter", SearchFilters(scope=tenants("t3"))))
    for label, filters in cases:
        latencies = []
        for query in unit(25):
            t0 = time.perf_counter()
            store.search(query, k=10, filters=filters)
            latencies.append((time.perf_counter() - t0) * 1000)
        warm = latencies[5:]  # the first searches load the index
        out[label] = {
            "first_ms": round(latencies[0]),
            "p50_ms": round(float(np.percentile(warm, 50)), 1),
            "p95_ms": round(float(np.percentile(warm, 95)), 1),
        }
    store.wait_for_maintenance(600)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
