"""Both vector stores at scale, side by side in one run: LanceDB (embedded) and a live Weaviate
(the server `make servers` builds, started here on loopback).

    PYTHONPATH=$PWD .venv/bin/python bench/vector_stores.py --rows 100000
    PYTHONPATH=$PWD .venv/bin/python bench/vector_stores.py --rows 100000 1000000 --stores lancedb

For each size and store: bulk-load `rows` records of `--dim`-d unit vectors (clustered, like
embeddings, not uniform noise) through the store's own `upsert`, then measure

- write cost: bulk load rows/s, and the index worker's case at that size — upserts of
  `--small-batch` records — as p50/p95/max ms per call, twice: right after the bulk load (LanceDB:
  beside the compaction its last bulk writes started) and once the store has settled (LanceDB:
  its compaction ended and one `optimize`, the index worker's steady state). Each write over
  `--slow-ms` is listed with whether a LanceDB compaction child was running and how much dirty
  and under-writeback page cache the kernel held (/proc/meminfo): the disk, not a lock;
- search latency p50/p95 (k = 10) without a filter and with a tenant filter (1 tenant of 10);
- recall@10 of each store's ANN index against exact search (numpy, same filter).

Results: bench/results/vector_stores_<rows>_<date>.{json,md}. A benchmark, not a test: nothing
here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.report import write_report
from shared.events import Modality
from shared.vectors.lancedb_rows import index_cache_needed_mb
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord, tenants
from shared.vectors.store import VectorStore

RESULTS = Path(__file__).resolve().parent / "results"
TENANTS = 10
CLUSTERS = 256
K = 10
PHASES = (("small_upserts_ms", "right after the load"), ("settled_small_upserts_ms", "settled"))


def clustered_vectors(rows: int, dim: int, seed: int) -> np.ndarray:
    """`rows` unit vectors around `CLUSTERS` random centres (float32, shape (rows, dim))."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32)
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 50_000):
        stop = min(rows, start + 50_000)
        picks = rng.integers(0, CLUSTERS, stop - start)
        block = centres[picks] + 0.6 * rng.standard_normal((stop - start, dim)).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def records(vectors: np.ndarray, start: int, stop: int, prefix: str = "r") -> list[VectorRecord]:
    return [
        VectorRecord(
            upload_id=f"{prefix}{i}",
            vector=vectors[i],
            modality=Modality.IMAGE,
            tenant=f"t{i % TENANTS}",
            source="bench",
        )
        for i in range(start, stop)
    ]


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray | None) -> list[set[str]]:
    """Exact top-k ids of every query (cosine = dot product of unit vectors), computed once per
    size for all stores: a blocked matrix product instead of one pass over the rows per query
    (at 1M x 1024-d that is 4 GB read per pass)."""
    best = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = queries @ vectors[start : start + 100_000].T
        if mask is not None:
            scores = np.where(mask[start : start + 100_000], scores, -np.inf)
        merged = np.concatenate([best, scores], axis=1)
        ids = np.concatenate([best_ids, np.arange(start, start + scores.shape[1])[None, :].repeat(len(queries), 0)], 1)
        top = np.argpartition(-merged, K, axis=1)[:, :K]
        best = np.take_along_axis(merged, top, 1)
        best_ids = np.take_along_axis(ids, top, 1)
    return [{f"r{i}" for i in row} for row in best_ids]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_store(
    name: str,
    store: VectorStore,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: dict[str, list[set[str]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    rows = len(vectors)
    started = time.perf_counter()
    load_writes = []
    for start in range(0, rows, args.load_batch):
        batch = records(vectors, start, min(rows, start + args.load_batch))
        t0 = time.perf_counter()
        store.upsert(batch)
        load_writes.append((time.perf_counter() - t0) * 1000)
        if (start // args.load_batch) % 50 == 0:
            print(
                f"  {name}: {min(rows, start + args.load_batch):,}/{rows:,} loaded"
                f" in {time.perf_counter() - started:.0f} s"
                f" (longest upsert {max(load_writes):.0f} ms, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    load_s = time.perf_counter() - started
    everything = SearchFilters(scope=ALL_TENANTS)
    assert store.count(everything) == rows, f"{name} holds {store.count(everything)} of {rows}"
    result: dict[str, Any] = {
        "load_s": round(load_s, 1),
        "load_rows_per_s": round(rows / load_s),
        "load_write_ms": {"p50": round(percentile(load_writes, 50), 1), "max": round(max(load_writes), 1)},
    }
    result["small_upserts_ms"] = small_upserts(store, vectors, args, seed=7)
    result.update(settle(store))
    for label, filters in (("no_filter", everything), ("tenant_filter", SearchFilters(scope=tenants("t3")))):
        latencies, recalls = [], []
        for query, exact in zip(queries, truth[label], strict=True):
            t0 = time.perf_counter()
            hits = store.search(query, k=K, filters=filters)
            latencies.append((time.perf_counter() - t0) * 1000)
            found = {hit.record.upload_id for hit in hits}
            recalls.append(len(found & exact) / K)
        result[label] = {
            "p50_ms": round(percentile(latencies, 50), 2),
            "p95_ms": round(percentile(latencies, 95), 2),
            "recall_at_10": round(statistics.fmean(recalls), 4),
        }
    # After the searches, which measure the settled table: these writes start a compaction.
    result["settled_small_upserts_ms"] = small_upserts(store, vectors, args, seed=8)
    return result


def settle(store: VectorStore) -> dict[str, Any]:
    """LanceDB: let the background compaction the writes started end, then one `optimize` that
    adds every row to the ANN index, so searches measure the table the index worker leaves
    behind once it is quiet rather than a half-indexed one (Weaviate indexes on insert)."""
    from shared.vectors.lancedb import LanceDBVectorStore

    if not isinstance(store, LanceDBVectorStore):
        return {}
    t0 = time.perf_counter()
    store.wait_for_maintenance()
    waited = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.optimize()
    return {"settle_wait_s": round(waited, 1), "optimize_s": round(time.perf_counter() - t0, 1)}


def page_cache_pending_mb() -> dict[str, float]:
    """The kernel's dirty and under-writeback page cache (MB): a writer that runs beside a
    process rewriting gigabytes waits for these to drain."""
    wanted = {"Dirty:": "dirty_mb", "Writeback:": "writeback_mb"}
    pending: dict[str, float] = {}
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            name, value, *_ = line.split()
            if name in wanted:
                pending[wanted[name]] = round(int(value) / 1024, 1)
    return pending


def small_upserts(store: VectorStore, vectors: np.ndarray, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Overwrites of existing records in the index worker's batch size (rows stay the same)."""
    from shared.vectors.lancedb import LanceDBVectorStore

    rng = np.random.default_rng(seed)
    times, slow = [], []
    for call in range(args.small_writes):
        start = int(rng.integers(0, len(vectors) - args.small_batch))
        batch = records(vectors, start, start + args.small_batch)
        t0 = time.perf_counter()
        store.upsert(batch)
        times.append((time.perf_counter() - t0) * 1000)
        if times[-1] > args.slow_ms:
            compacting = store.maintaining() if isinstance(store, LanceDBVectorStore) else None
            slow.append({"call": call, "ms": round(times[-1]), "compacting": compacting, **page_cache_pending_mb()})
    return {
        "records_per_call": args.small_batch,
        "calls": len(times),
        "p50": round(percentile(times, 50), 1),
        "p95": round(percentile(times, 95), 1),
        "max": round(max(times), 1),
        "over_1s": sum(ms > 1000 for ms in times),
        "slow": slow,
    }


@contextmanager
def open_store(name: str, workdir: Path, dim: int, index_cache_mb: int) -> Iterator[VectorStore]:
    if name == "lancedb":
        from shared.vectors.lancedb import LanceDBVectorStore

        lance = LanceDBVectorStore(workdir / "lancedb", table="bench", dimension=dim, index_cache_mb=index_cache_mb)
        try:
            yield lance
        finally:
            lance.close()
        return
    from pydantic import SecretStr

    from shared.vectors.weaviate import WeaviateVectorStore, parse_endpoint
    from tests.support.weaviate_server import WeaviateServer

    server = WeaviateServer(workdir / "weaviate").start()
    address = server.address
    weaviate = WeaviateVectorStore(
        parse_endpoint(address.url, grpc_port=address.grpc_port),
        api_key=SecretStr(address.api_key) if address.api_key else None,
        collection="Bench",
        dimension=dim,
    )
    try:
        yield weaviate
    finally:
        weaviate.close()
        server.stop()


def run_size(rows: int, args: argparse.Namespace) -> dict[str, Any]:
    vectors = clustered_vectors(rows, args.dim, seed=rows)
    queries = clustered_vectors(args.queries, args.dim, seed=rows)  # same centres: realistic queries
    tenant_mask = np.arange(rows) % TENANTS == 3
    t0 = time.perf_counter()
    truth = {
        "no_filter": exact_top_k(vectors, queries, None),
        "tenant_filter": exact_top_k(vectors, queries, tenant_mask),
    }
    print(f"exact top-{K} of {args.queries} queries in {time.perf_counter() - t0:.0f} s", flush=True)
    measured: dict[str, Any] = {}
    result = {
        "benchmark": "vector_stores",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": host_info(),
        "command": " ".join(sys.argv),
        "rows": rows,
        "dim": args.dim,
        "queries": args.queries,
        "load_batch": args.load_batch,
        "label": args.label,
        "stores": measured,
    }
    index_cache_mb = args.index_cache_mb or index_cache_needed_mb(rows, args.dim, vector_columns=1)
    result["lancedb_index_cache_mb"] = index_cache_mb
    for name in args.stores:
        with (
            tempfile.TemporaryDirectory(prefix=f"omnibind-vs-{name}-") as tmp,
            open_store(name, Path(tmp), args.dim, index_cache_mb) as s,
        ):
            print(f"{name}: {rows:,} rows of {args.dim}-d", flush=True)
            measured[name] = measure_store(name, s, vectors, queries, truth, args)
            measured[name]["disk_mb"] = round(sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6)
        print(f"{name}: {measured[name]}", flush=True)
        save(result)  # after each store: a long run stopped later keeps what it measured
    return result


def save(result: dict[str, Any]) -> None:
    label = f"{result['label']}_" if result.get("label") else ""
    stem = f"vector_stores_{result['rows']}_{label}{dt.date.today().isoformat()}"
    write_report(RESULTS / stem, result, markdown(result))


def markdown(result: dict[str, Any]) -> str:
    row: Callable[[str, dict[str, Any]], str] = lambda name, m: (  # noqa: E731
        f"| {name} | {m['load_rows_per_s']:,} | {m['small_upserts_ms']['p50']} / {m['small_upserts_ms']['p95']} / "
        f"{m['small_upserts_ms']['max']} | {m['no_filter']['p50_ms']} / {m['no_filter']['p95_ms']} | "
        f"{m['no_filter']['recall_at_10']} | {m['tenant_filter']['p50_ms']} / {m['tenant_filter']['p95_ms']} | "
        f"{m['tenant_filter']['recall_at_10']} | {m['disk_mb']} |"
    )
    return "\n".join(
        [
            f"# Vector stores at {result['rows']:,} rows of {result['dim']}-d",
            "",
            f"- date: {result['date']}; machine: {result['machine']}",
            f"- command: `{result['command']}`",
            f"- {result['queries']} queries, k = {K}; tenant filter = 1 tenant of {TENANTS}; "
            f"bulk load in batches of {result['load_batch']}; LanceDB index cache "
            f"{result.get('lancedb_index_cache_mb', 512)} MB",
            "",
            "| store | bulk load rows/s | small upsert ms p50 / p95 / max | search ms p50 / p95 | recall@10 "
            "| filtered search ms p50 / p95 | filtered recall@10 | disk MB |",
            "|---|---|---|---|---|---|---|---|",
            *(row(name, m) for name, m in result["stores"].items()),
            "",
            "Writes: the bulk load's upserts of "
            f"{result['load_batch']} records and the index worker's case (upserts of "
            f"{next(iter(result['stores'].values()))['small_upserts_ms']['records_per_call']} records into the full "
            "table; LanceDB starts a background compaction every 100 writes, so later ones overlap it):",
            "",
            "| store | bulk upsert ms p50 / max | small upserts per phase | right after the load: ms p50 / p95 / max "
            "(> 1 s) | settled: ms p50 / p95 / max (> 1 s) | settle wait s | optimize s |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {m['load_write_ms']['p50']} / {m['load_write_ms']['max']} | "
                f"{m['small_upserts_ms']['calls']} | {phase(m.get('small_upserts_ms'))} | "
                f"{phase(m.get('settled_small_upserts_ms'))} | "
                f"{m.get('settle_wait_s', '-')} | {m.get('optimize_s', '-')} |"
                for name, m in result["stores"].items()
            ),
            "",
            "Small upserts over --slow-ms (compacting = a LanceDB compaction child was running; dirty / "
            "writeback = the kernel's page cache waiting for the disk, MB):",
            "",
            *(
                f"- {name}, {label}: " + (", ".join(slow_write(w) for w in m[key].get("slow", [])) or "none")
                for name, m in result["stores"].items()
                for key, label in PHASES
                if key in m
            ),
            "",
        ]
    )


def phase(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    return f"{stats['p50']} / {stats['p95']} / {stats['max']} ({stats.get('over_1s', '-')})"


def slow_write(write: dict[str, Any]) -> str:
    return (
        f"#{write['call']} {write['ms']} ms (compacting {write['compacting']}, dirty {write.get('dirty_mb')}, "
        f"writeback {write.get('writeback_mb')})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000], help="sizes to measure")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--stores", nargs="+", choices=["lancedb", "weaviate"], default=["lancedb", "weaviate"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--load-batch", type=int, default=1000, help="records per upsert while loading")
    parser.add_argument("--small-batch", type=int, default=8, help="records per upsert of the index worker")
    parser.add_argument("--small-writes", type=int, default=100, help="small upserts per phase")
    parser.add_argument("--slow-ms", type=float, default=500.0, help="small upserts slower than this are listed")
    parser.add_argument("--label", default="", help="added to the result file names")
    parser.add_argument(
        "--index-cache-mb",
        type=int,
        default=0,
        help="LanceDB's index cache (OMNIBIND_VECTORS__INDEX_CACHE_MB); 0 = sized to hold the vectors "
        "(IVF_FLAT keeps them all: rows x dim x 4 bytes, + 25 %%), as docs/vectors.md says to size it",
    )
    args = parser.parse_args()
    for rows in args.rows:
        run_size(rows, args)


if __name__ == "__main__":
    main()
