"""Does the embedded vector store stay in shape under a long stream of small writes?

One process upserts ``--records`` new records through `LanceDBVectorStore.upsert` in
batches of 1-8 (uniformly drawn: what the index worker's 50 ms batching makes; ``--batch-max 1``:
one record per write, the index worker at a trickle), exactly
as `workers/indexer.py` calls it, with the store's own opportunistic compaction. Every
``--every`` writes it records the process's RSS, the table's versions (``_versions``),
data files and bytes on disk, the search latency (p50/p95 of ``--queries`` k=10 searches)
and the load average (other work shares the machine).

Results: bench/results/lancedb_soak_<label>_<date>.{json,md}.

    python bench/lancedb_soak.py --records 100000 --dim 32 --label after
    python bench/lancedb_soak.py --records 15000 --dim 32 --cleanup-older-than-s 3600 \\
        --metadata-cache-mb 1024 --index-cache-mb 6144 --label before-settings
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lancedb_writes import records  # noqa: E402
from bench.machine import host_info  # noqa: E402
from bench.report import write_report  # noqa: E402
from shared.vectors.lancedb import NEVER, LanceDBVectorStore  # noqa: E402
from shared.vectors.lancedb_maintenance import fragment_count  # noqa: E402
from shared.vectors.records import ALL_TENANTS, SearchFilters  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def on_disk(path: Path, table: str = "uploads") -> dict[str, float]:
    """Versions, data files and bytes of the table directory."""
    root = path / f"{table}.lance"
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {
        "versions": len(list((root / "_versions").glob("*.manifest"))),
        "data_files": len(list((root / "data").glob("*.lance"))),
        "disk_mb": round(total / 2**20, 2),
    }


def index_shape(path: Path, table: str = "uploads") -> dict[str, int]:
    """Fragments, and the vector index's segments / rows not yet in it (0/0 without one)."""
    import lancedb

    opened = lancedb.connect(path).open_table(table)
    segments = unindexed = 0
    for index in opened.list_indices():
        if "vector" in index.columns:
            stats = opened.index_stats(index.name)
            if stats is not None:
                segments, unindexed = int(stats.num_indices or 0), int(stats.num_unindexed_rows)
    return {"fragments": fragment_count(opened), "ann_segments": segments, "ann_unindexed_rows": unindexed}


def rss_mb(process: psutil.Process) -> float:
    return round(process.memory_info().rss / 2**20, 1)


def trimmed_rss_mb(process: psutil.Process) -> float:
    """RSS after glibc hands freed heap pages back (malloc_trim): what the allocator only held."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb(process)


def search_ms(store: LanceDBVectorStore, dim: int, queries: int, rng: np.random.Generator) -> tuple[float, float]:
    timings = []
    for _ in range(queries):
        query = rng.standard_normal(dim).astype(np.float32)
        started = time.perf_counter()
        store.search(query, k=10, filters=SearchFilters(scope=ALL_TENANTS))
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return round(timings[len(timings) // 2], 2), round(timings[int(len(timings) * 0.95)], 2)


def soak(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    store = LanceDBVectorStore(
        path,
        dimension=args.dim,
        compact_every_writes=args.compact_every,
        cleanup_older_than_s=args.cleanup_older_than_s,
        index_cache_mb=args.index_cache_mb,
        metadata_cache_mb=args.metadata_cache_mb,
        ann_index_min_rows=args.ann_index_min_rows or NEVER,
    )
    process = psutil.Process()
    samples: list[dict[str, Any]] = []
    written = writes = 0
    longest_write_ms = 0.0
    started = time.perf_counter()
    while written < args.records:
        batch = records(min(int(rng.integers(1, args.batch_max + 1)), args.records - written), args.dim, rng)
        t0 = time.perf_counter()
        store.upsert(batch)
        longest_write_ms = max(longest_write_ms, (time.perf_counter() - t0) * 1000)
        written += len(batch)
        writes += 1
        if args.reopen_every and writes % args.reopen_every == 0:
            store.close()
        if writes % args.every == 0 or written >= args.records:
            p50, p95 = search_ms(store, args.dim, args.queries, rng)
            sample = {
                "writes": writes,
                "rows": written,
                "elapsed_s": round(time.perf_counter() - started, 1),
                "rss_mb": rss_mb(process),
                "cache_mb": round(store.cache_bytes() / 2**20, 1),
                **on_disk(path),
                **index_shape(path),
                "search_p50_ms": p50,
                "search_p95_ms": p95,
                "longest_write_ms": round(longest_write_ms, 1),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
            }
            store.wait_for_maintenance(0)  # reaps a finished background compaction
            if args.trim_at_sample:
                sample["rss_trimmed_mb"] = trimmed_rss_mb(process)
            longest_write_ms = 0.0
            samples.append(sample)
            print(sample, flush=True)
            if time.perf_counter() - started > args.max_s:
                print(f"stopping after {args.max_s} s: {written} of {args.records} records written", flush=True)
                break
    return samples


def search_grid(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Search p50/p95 on tables of each of ``--grid-rows`` rows, compacted (one fragment),
    then after ``--grid-fragments`` single-record writes each: rows vs fragments, apart."""
    rng = np.random.default_rng(8)
    out = []
    for rows in [int(v) for v in args.grid_rows.split(",")]:
        table_dir = Path(tempfile.mkdtemp(dir=path))
        store = LanceDBVectorStore(table_dir, dimension=args.dim, compact_every_writes=0, ann_index_min_rows=NEVER)
        store.upsert(records(rows, args.dim, rng))
        fragments_done = 1
        for fragments in [1, *[int(v) for v in args.grid_fragments.split(",")]]:
            for _ in range(fragments - fragments_done):
                store.upsert(records(1, args.dim, rng))
            fragments_done = max(fragments, fragments_done)
            p50, p95 = search_ms(store, args.dim, args.queries, rng)
            point = {"rows": rows, "fragments": fragments_done, "search_p50_ms": p50, "search_p95_ms": p95}
            point["disk_mb"] = on_disk(table_dir)["disk_mb"]
            point["load_1min"] = round(os.getloadavg()[0], 2)
            print(point, flush=True)
            out.append(point)
        store.close()
    return out


def row(sample: dict[str, Any]) -> str:
    return (
        f"| {sample['writes']:,} | {sample['rows']:,} | {sample['elapsed_s']} | {sample['rss_mb']} | "
        f"{sample.get('rss_trimmed_mb', '')} | {sample.get('cache_mb', '')} | "
        f"{sample['versions']} | {sample['data_files']} | {sample['disk_mb']} | {sample.get('fragments', '')} | "
        f"{sample.get('ann_segments', '')} | {sample['search_p50_ms']} / "
        f"{sample['search_p95_ms']} | {sample['longest_write_ms']} | {sample['load_avg'][0]} |"
    )


def write_grid(points: list[dict[str, Any]], info: dict[str, Any], command: str, args: argparse.Namespace) -> None:
    lines = [
        f"# LanceDB search latency: table rows vs fragments ({args.dim}-d, exact scan, k=10, tenant filter)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB; load average at start "
        f"{info['load_avg_at_start']}; lancedb {info['lancedb']}.",
        f"Command: `{command}`",
        "",
        "| rows | fragments | search p50 / p95 ms | disk MB | load 1 min |",
        "|---:|---:|---:|---:|---:|",
        *[
            f"| {p['rows']:,} | {p['fragments']} | {p['search_p50_ms']} / {p['search_p95_ms']} | {p['disk_mb']} "
            f"| {p['load_1min']} |"
            for p in points
        ],
        "",
    ]
    report = {"benchmark": "lancedb_search_grid", "machine": info, "command": command, "points": points}
    write_report(RESULTS / f"lancedb_search_grid_{dt.date.today().isoformat()}", report, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records upserted in all")
    parser.add_argument("--dim", type=int, default=32, help="vector dimension (32 = the tiny model)")
    parser.add_argument("--every", type=int, default=1000, help="writes between samples")
    parser.add_argument(
        "--batch-max", type=int, default=8, help="records per write drawn from 1..this (1 = one record per upload)"
    )
    parser.add_argument("--queries", type=int, default=40, help="searches per sample")
    parser.add_argument("--compact-every", type=int, default=100, help="the store's compact_every_writes")
    parser.add_argument("--cleanup-older-than-s", type=float, default=10.0)
    parser.add_argument("--index-cache-mb", type=int, default=512)
    parser.add_argument("--metadata-cache-mb", type=int, default=64)
    parser.add_argument(
        "--ann-index-min-rows", type=int, default=20_000, help="the store's ann_index_min_rows (0 = no ANN index)"
    )
    parser.add_argument("--reopen-every", type=int, default=0, help="drop the store's handles every N writes")
    parser.add_argument(
        "--trim-at-sample", action="store_true", help="also record RSS after malloc_trim(0) at each sample"
    )
    parser.add_argument("--grid-rows", default="", help="instead of the soak: search latency at these table sizes")
    parser.add_argument("--grid-fragments", default="30,100,300", help="... and after this many fragments in all")
    parser.add_argument("--max-s", type=float, default=3600.0, help="stop sampling after this long")
    parser.add_argument("--label", default="after", help="names the result files")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the table lives (default: temp dir)")
    args = parser.parse_args()
    import lancedb

    info = {**host_info(), "lancedb": lancedb.__version__}
    workdir = Path(tempfile.mkdtemp(prefix="lancedb-soak-", dir=args.data_dir))
    command = " ".join(["bench/lancedb_soak.py", *sys.argv[1:]])
    try:
        if args.grid_rows:
            write_grid(search_grid(workdir, args), info, command, args)
            return
        samples = soak(workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    last = samples[-1]
    report = {
        "benchmark": "lancedb_soak",
        "machine": info,
        "command": command,
        "settings": settings,
        "samples": samples,
    }
    per_write = "1" if args.batch_max == 1 else f"1-{args.batch_max}"
    lines = [
        f"# LanceDB soak: {last['rows']:,} records in {last['writes']:,} small upserts ({args.label})",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB; load average at start "
        f"{info['load_avg_at_start']} (other sessions' work shared the cores); lancedb {info['lancedb']}.",
        f"Command: `{command}`",
        f"Each write: `LanceDBVectorStore.upsert` of {per_write} new {args.dim}-d records (one process); "
        "compaction every "
        f"{args.compact_every} writes at most once per {args.cleanup_older_than_s:g} s, versions older than that "
        f"deleted; caches: index {args.index_cache_mb} MB, metadata {args.metadata_cache_mb} MB.",
        "",
        "| writes | rows | s | RSS MB | RSS after malloc_trim MB | lance caches MB | versions | data files | disk MB "
        "| fragments | ANN segments | search p50 / p95 ms | longest write ms (since last sample) | load 1 min |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[row(sample) for sample in samples],
        "",
    ]
    if last["rows"] < args.records:
        lines.append(f"Stopped after {args.max_s:g} s, before all {args.records:,} records were written.\n")
    write_report(RESULTS / f"lancedb_soak_{args.label}_{dt.date.today().isoformat()}", report, "\n".join(lines))


if __name__ == "__main__":
    main()
