"""Does the embedded vector store stay in shape under a long stream of small writes?

One process upserts ``--records`` new records through `LanceDBVectorStore.upsert` in
batches of 1-8 (uniformly drawn: what the index worker's 50 ms batching makes), exactly
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
import datetime as dt
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
from shared.vectors.lancedb import LanceDBVectorStore  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def on_disk(path: Path, table: str = "uploads") -> dict[str, int]:
    """Versions, data files and bytes of the table directory."""
    root = path / f"{table}.lance"
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {
        "versions": len(list((root / "_versions").glob("*.manifest"))),
        "data_files": len(list((root / "data").glob("*.lance"))),
        "disk_mb": round(total / 2**20, 2),
    }


def search_ms(store: LanceDBVectorStore, dim: int, queries: int, rng: np.random.Generator) -> tuple[float, float]:
    timings = []
    for _ in range(queries):
        query = rng.standard_normal(dim).astype(np.float32)
        started = time.perf_counter()
        store.search(query, k=10)
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
    )
    process = psutil.Process()
    samples: list[dict[str, Any]] = []
    written = writes = 0
    longest_write_ms = 0.0
    started = time.perf_counter()
    while written < args.records:
        batch = records(min(int(rng.integers(1, 9)), args.records - written), args.dim, rng)
        t0 = time.perf_counter()
        store.upsert(batch)
        longest_write_ms = max(longest_write_ms, (time.perf_counter() - t0) * 1000)
        written += len(batch)
        writes += 1
        if writes % args.every == 0 or written >= args.records:
            p50, p95 = search_ms(store, args.dim, args.queries, rng)
            sample = {
                "writes": writes,
                "rows": written,
                "elapsed_s": round(time.perf_counter() - started, 1),
                "rss_mb": round(process.memory_info().rss / 2**20, 1),
                **on_disk(path),
                "search_p50_ms": p50,
                "search_p95_ms": p95,
                "longest_write_ms": round(longest_write_ms, 1),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
            }
            longest_write_ms = 0.0
            samples.append(sample)
            print(sample, flush=True)
            if time.perf_counter() - started > args.max_s:
                print(f"stopping after {args.max_s} s: {written} of {args.records} records written", flush=True)
                break
    return samples


def row(sample: dict[str, Any]) -> str:
    return (
        f"| {sample['writes']:,} | {sample['rows']:,} | {sample['elapsed_s']} | {sample['rss_mb']} | "
        f"{sample['versions']} | {sample['data_files']} | {sample['disk_mb']} | {sample['search_p50_ms']} / "
        f"{sample['search_p95_ms']} | {sample['longest_write_ms']} | {sample['load_avg'][0]} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records upserted in all")
    parser.add_argument("--dim", type=int, default=32, help="vector dimension (32 = the tiny model)")
    parser.add_argument("--every", type=int, default=1000, help="writes between samples")
    parser.add_argument("--queries", type=int, default=40, help="searches per sample")
    parser.add_argument("--compact-every", type=int, default=100, help="the store's compact_every_writes")
    parser.add_argument("--cleanup-older-than-s", type=float, default=10.0)
    parser.add_argument("--index-cache-mb", type=int, default=512)
    parser.add_argument("--metadata-cache-mb", type=int, default=64)
    parser.add_argument("--max-s", type=float, default=3600.0, help="stop sampling after this long")
    parser.add_argument("--label", default="after", help="names the result files")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the table lives (default: temp dir)")
    args = parser.parse_args()
    import lancedb

    info = {**host_info(), "lancedb": lancedb.__version__}
    workdir = Path(tempfile.mkdtemp(prefix="lancedb-soak-", dir=args.data_dir))
    try:
        samples = soak(workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = " ".join(["bench/lancedb_soak.py", *sys.argv[1:]])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    last = samples[-1]
    report = {
        "benchmark": "lancedb_soak",
        "machine": info,
        "command": command,
        "settings": settings,
        "samples": samples,
    }
    lines = [
        f"# LanceDB soak: {last['rows']:,} records in {last['writes']:,} small upserts ({args.label})",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB; load average at start "
        f"{info['load_avg_at_start']} (other sessions' work shared the cores); lancedb {info['lancedb']}.",
        f"Command: `{command}`",
        f"Each write: `LanceDBVectorStore.upsert` of 1-8 new {args.dim}-d records (one process); compaction every "
        f"{args.compact_every} writes at most once per {args.cleanup_older_than_s:g} s, versions older than that "
        f"deleted; caches: index {args.index_cache_mb} MB, metadata {args.metadata_cache_mb} MB.",
        "",
        "| writes | rows | s | RSS MB | versions | data files | disk MB | search p50 / p95 ms | longest write ms "
        "(since last sample) | load 1 min |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[row(sample) for sample in samples],
        "",
    ]
    if last["rows"] < args.records:
        lines.append(f"Stopped after {args.max_s:g} s, before all {args.records:,} records were written.\n")
    write_report(RESULTS / f"lancedb_soak_{args.label}_{dt.date.today().isoformat()}", report, "\n".join(lines))


if __name__ == "__main__":
    main()
