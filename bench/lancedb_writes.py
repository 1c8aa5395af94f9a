"""What one index write costs the embedded vector store as its table grows (issue #6).

The index worker writes records in batches (`IndexWriter`): one ``merge_insert`` on
``upload_id`` per batch, so that a redelivered upload overwrites instead of duplicating.
This benchmark builds a table of each size in ``--rows`` (random unit vectors with the
properties an upload carries; compacted, with the ``upload_id`` index), then upserts
``--writes`` batches of ``--batch`` new records through `LanceDBVectorStore.upsert` exactly
as the index worker does, compaction every ``--compact-every`` writes included, twice: with
the ``upload_id`` BTREE index (which the store builds from ``key_index_min_rows`` rows on)
and with that index dropped. It reports CPU and wall milliseconds per write. The ANN index
is left out (its build over a large table would dominate the run and is not what a write
costs).

Results: bench/results/lancedb_writes_<date>.{json,md}.

    python bench/lancedb_writes.py --rows 10000,100000,1000000 --batch 7 --writes 300
    python bench/lancedb_writes.py --rows 1000000 --variants during_compaction
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import host_info  # noqa: E402
from bench.report import write_report  # noqa: E402
from shared.events import Modality, ObjectRef  # noqa: E402
from shared.vectors.lancedb import KEY_INDEX, NEVER, LanceDBVectorStore, records_to_arrow  # noqa: E402
from shared.vectors.records import VectorRecord  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUILD_CHUNK = 50_000
WARMUP_WRITES = 5


def records(count: int, dim: int, rng: np.random.Generator) -> list[VectorRecord]:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = []
    for vector in vectors:
        upload_id = uuid.uuid4().hex
        out.append(
            VectorRecord(
                upload_id=upload_id,
                vector=vector,
                modality=Modality.IMAGE,
                object=ObjectRef(bucket="uploads", key=f"tenant-a/{upload_id}.jpg", etag=f'"{upload_id}"', size=81_234),
                content_type="image/jpeg",
                size=81_234,
                sha256=upload_id * 2,
                tenant="tenant-a",
                metadata={"album": "summer"},
                model="imagebind_huge",
                checkpoint="sha256:bench",
            )
        )
    return out


def chunks(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


def build(path: Path, rows: int, dim: int, rng: np.random.Generator) -> None:
    """A compacted table of `rows` records, as the store leaves it after `optimize`."""
    store = LanceDBVectorStore(path, compact_every_writes=0, ann_index_min_rows=NEVER, key_index_min_rows=0)
    sizes = list(chunks(rows, BUILD_CHUNK))
    store.upsert(records(sizes[0], dim, rng))  # creates the table (and its key index)
    import lancedb

    table = lancedb.connect(path).open_table("uploads")
    for size in sizes[1:]:  # plain appends: the ids are new, and this is set-up, not the measurement
        table.add(records_to_arrow(records(size, dim, rng), dim))
    store.optimize()


def measure(
    path: Path, *, key_index: bool, compact_every: int, writes: int, batch: int, dim: int, rng: np.random.Generator
) -> dict[str, Any]:
    store = LanceDBVectorStore(
        path,
        compact_every_writes=compact_every,
        ann_index_min_rows=NEVER,
        key_index_min_rows=0 if key_index else NEVER,
    )
    pending = [records(batch, dim, rng) for _ in range(writes + WARMUP_WRITES)]
    for chunk in pending[:WARMUP_WRITES]:  # opens the table, fills lancedb's caches
        store.upsert(chunk)
    cpu_ms, wall_ms = [], []
    for chunk in pending[WARMUP_WRITES:]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        store.upsert(chunk)
        cpu_ms.append((time.process_time() - cpu0) * 1000)
        wall_ms.append((time.perf_counter() - wall0) * 1000)
    store.optimize()  # leaves the table compacted for the next measurement
    ordered = sorted(wall_ms)
    return {
        "cpu_ms_per_write_mean": round(statistics.fmean(cpu_ms), 2),
        "cpu_ms_per_write_median": round(statistics.median(cpu_ms), 2),
        "wall_ms_p50": round(ordered[len(ordered) // 2], 2),
        "wall_ms_p95": round(ordered[int(len(ordered) * 0.95)], 2),
        "wall_ms_max": round(ordered[-1], 2),
    }


def measure_during_compaction(
    path: Path,
    *,
    compact_every: int,
    batch: int,
    dim: int,
    rng: np.random.Generator,
    max_s: float,
    compactions: int,
) -> dict[str, Any]:
    """Write until `compactions` background compactions (child processes the store starts
    itself) have started and ended; the wall time of each write that started one and of
    every write while one ran. The table must have been compacted just before."""
    store = LanceDBVectorStore(path, compact_every_writes=compact_every, ann_index_min_rows=NEVER, key_index_min_rows=0)
    for _ in range(WARMUP_WRITES):
        store.upsert(records(batch, dim, rng))
    outside_ms: list[float] = []
    rounds: list[dict[str, Any]] = []
    during_ms: list[float] = []
    trigger_ms: float | None = None
    compaction_started = 0.0
    stamp = _compaction_stamp(path)
    started = time.perf_counter()
    while len(rounds) < compactions and time.perf_counter() - started < max_s:
        chunk = records(batch, dim, rng)
        wall0 = time.perf_counter()
        store.upsert(chunk)
        wall_ms = (time.perf_counter() - wall0) * 1000
        running = not store.wait_for_maintenance(0)
        # A write that reaps a finished compaction may start the next one at once (when
        # the next is already due): a new stamp on the lock file tells.
        new_stamp = _compaction_stamp(path)
        started_one, stamp = new_stamp != stamp, new_stamp
        if trigger_ms is not None and (started_one or not running):
            during_ms.append(wall_ms)
            rounds.append(_round(trigger_ms, time.perf_counter() - compaction_started, during_ms))
            trigger_ms = None
            if not started_one:
                continue
        if started_one:
            trigger_ms, compaction_started, during_ms = wall_ms, time.perf_counter(), []
        elif trigger_ms is not None:
            during_ms.append(wall_ms)
        else:
            outside_ms.append(wall_ms)
    store.wait_for_maintenance()
    during_all = sorted(ms for r in rounds for ms in r["during_ms"]) or [float("nan")]
    outside = sorted(outside_ms) or [float("nan")]
    return {
        "compactions": [{k: v for k, v in r.items() if k != "during_ms"} for r in rounds],
        "compactions_finished": len(rounds),
        "compaction_s_max": max((r["compaction_s"] for r in rounds), default=None),
        "trigger_write_ms_max": max((r["trigger_write_ms"] for r in rounds), default=None),
        "writes_during": len(during_all),
        "wall_ms_p50_during": round(during_all[len(during_all) // 2], 1),
        "wall_ms_p95_during": round(during_all[int(len(during_all) * 0.95)], 1),
        "wall_ms_max_during": round(during_all[-1], 1),
        "writes_outside": len(outside_ms),
        "wall_ms_p50_outside": round(outside[len(outside) // 2], 1),
        "wall_ms_max_outside": round(outside[-1], 1),
    }


def measure_inline_compaction(
    path: Path,
    *,
    compact_every: int,
    batch: int,
    dim: int,
    rng: np.random.Generator,
    max_s: float,
    compactions: int,
) -> dict[str, Any]:
    """The same writes as `measure_during_compaction`, compacting as the store did before
    (up to 2026-12-05): `optimize` inside the write that triggers it (every `compact_every`
    writes, at most once per 10 s), so that write returns only after the compaction."""
    store = LanceDBVectorStore(path, compact_every_writes=0, ann_index_min_rows=NEVER, key_index_min_rows=0)
    for _ in range(WARMUP_WRITES):
        store.upsert(records(batch, dim, rng))
    outside_ms: list[float] = []
    rounds: list[dict[str, Any]] = []
    writes, last_compaction = 0, time.perf_counter()
    started = time.perf_counter()
    while len(rounds) < compactions and time.perf_counter() - started < max_s:
        chunk = records(batch, dim, rng)
        wall0 = time.perf_counter()
        store.upsert(chunk)
        writes += 1
        if writes >= compact_every and time.perf_counter() - last_compaction >= 10.0:
            compaction0 = time.perf_counter()
            store.optimize()
            writes, last_compaction = 0, time.perf_counter()
            rounds.append(_round((last_compaction - wall0) * 1000, last_compaction - compaction0, []))
        else:
            outside_ms.append((time.perf_counter() - wall0) * 1000)
    outside = sorted(outside_ms) or [float("nan")]
    return {
        "compactions": [{k: v for k, v in r.items() if k != "during_ms"} for r in rounds],
        "compactions_finished": len(rounds),
        "compaction_s_max": max((r["compaction_s"] for r in rounds), default=None),
        "trigger_write_ms_max": max((r["trigger_write_ms"] for r in rounds), default=None),
        "writes_during": 0,
        "wall_ms_p50_during": None,
        "wall_ms_p95_during": None,
        "wall_ms_max_during": None,
        "writes_outside": len(outside_ms),
        "wall_ms_p50_outside": round(outside[len(outside) // 2], 1),
        "wall_ms_max_outside": round(outside[-1], 1),
    }


def _compaction_stamp(path: Path) -> float:
    """When the last compaction of the table started (the lock file's mtime); 0 if never."""
    lock = path / "uploads.compact.lock"
    return lock.stat().st_mtime if lock.exists() else 0.0


def _round(trigger_ms: float, compaction_s: float, during_ms: list[float]) -> dict[str, Any]:
    return {
        "trigger_write_ms": round(trigger_ms, 1),
        "compaction_s": round(compaction_s, 1),
        "writes_during": len(during_ms),
        "wall_ms_max_during": round(max(during_ms), 1) if during_ms else None,
        "during_ms": during_ms,
    }


def drop_key_index(path: Path) -> None:
    import lancedb

    lancedb.connect(path).open_table("uploads").drop_index(KEY_INDEX)


def run(
    rows_list: list[int],
    writes: int,
    batch: int,
    dim: int,
    compact_every: int,
    data_dir: Path | None,
    variants: list[str],
    max_compaction_s: float,
    compactions: int,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(6)
    results = []
    for rows in rows_list:
        workdir = Path(tempfile.mkdtemp(prefix="lancedb-writes-", dir=data_dir))
        try:
            started = time.perf_counter()
            build(workdir, rows, dim, rng)
            build_s = time.perf_counter() - started
            print(f"{rows} rows built in {build_s:.0f} s", flush=True)
            result: dict[str, Any] = {"rows": rows, "build_s": round(build_s, 1)}
            settings = {"compact_every": compact_every, "batch": batch, "dim": dim, "rng": rng}
            if "inline_compaction" in variants:  # the old way, for comparison; first: the build has just compacted
                result["inline_compaction"] = measure_inline_compaction(
                    workdir, max_s=max_compaction_s, compactions=compactions, **settings
                )
                print(f"  compacting inside the triggering write: {result['inline_compaction']}", flush=True)
            if "during_compaction" in variants:
                result["during_compaction"] = measure_during_compaction(
                    workdir, max_s=max_compaction_s, compactions=compactions, **settings
                )
                print(f"  during background compactions: {result['during_compaction']}", flush=True)
                if "key_index" in variants or "no_key_index" in variants:
                    LanceDBVectorStore(workdir).optimize()
            if "key_index" in variants:
                result["key_index"] = measure(workdir, key_index=True, writes=writes, **settings)
                print(f"  with the upload_id index: {result['key_index']}", flush=True)
            if "no_key_index" in variants:
                drop_key_index(workdir)
                result["no_key_index"] = measure(workdir, key_index=False, writes=writes, **settings)
                print(f"  without it:               {result['no_key_index']}", flush=True)
            results.append(result)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def cells(measured: dict[str, Any]) -> str:
    return (
        f"{measured['cpu_ms_per_write_mean']} ({measured['cpu_ms_per_write_median']}) "
        f"| {measured['wall_ms_p50']} / {measured['wall_ms_p95']}"
    )


def table_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    if any("key_index" in r and "no_key_index" in r for r in results):
        lines += [
            "| rows | indexed: CPU ms/write mean (median) | wall p50 / p95 ms | without: CPU (median) "
            "| wall p50 / p95 |",
            "|---:|---:|---:|---:|---:|",
            *[
                f"| {r['rows']:,} | {cells(r['key_index'])} | {cells(r['no_key_index'])} |"
                for r in results
                if "key_index" in r and "no_key_index" in r
            ],
            "",
        ]
    for variant, title in (
        ("inline_compaction", "Before: compaction inside the write that triggers it (as up to 2026-12-05):"),
        (
            "during_compaction",
            "After: the store's own background compactions (child processes), with the upload_id index:",
        ),
    ):
        lines += _compaction_lines([r for r in results if variant in r], variant, title)
    return lines


def _compaction_lines(during: list[dict[str, Any]], variant: str, title: str) -> list[str]:
    lines: list[str] = []
    if during:
        lines += [
            title,
            "",
            "| rows | compactions | longest compaction s | longest write that started one ms | writes during "
            "| wall p50 / p95 / max ms during | wall p50 / max ms outside |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in during:
            d = r[variant]
            lines.append(
                f"| {r['rows']:,} | {d['compactions_finished']} | {d['compaction_s_max']} | "
                f"{d['trigger_write_ms_max']} | {d['writes_during']} | "
                f"{d['wall_ms_p50_during']} / {d['wall_ms_p95_during']} / {d['wall_ms_max_during']} | "
                f"{d['wall_ms_p50_outside']} / {d['wall_ms_max_outside']} |"
            )
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,100000,1000000", help="table sizes, comma-separated")
    parser.add_argument("--writes", type=int, default=300, help="upserts measured per table size and variant")
    parser.add_argument("--batch", type=int, default=7, help="records per upsert (the pipeline's ~7 under load)")
    parser.add_argument("--dim", type=int, default=1024, help="vector dimension (1024 = imagebind_huge)")
    parser.add_argument("--compact-every", type=int, default=100, help="the store's compact_every_writes")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the tables are built (default: temp dir)")
    parser.add_argument(
        "--variants",
        default="key_index,no_key_index,during_compaction",
        help="key_index, no_key_index (--writes upserts each), during_compaction (upserts until --compactions "
        "background compactions they start have ended) and/or inline_compaction (the same, compacting inside the "
        "triggering write as before)",
    )
    parser.add_argument("--compactions", type=int, default=3, help="during_compaction: background compactions to see")
    parser.add_argument("--max-compaction-s", type=float, default=900.0, help="during_compaction: give up after this")
    parser.add_argument("--label", default="", help="names the result files (lancedb_writes_<label>_<date>)")
    args = parser.parse_args()
    rows_list = [int(value) for value in args.rows.split(",")]
    variants = args.variants.split(",")
    import lancedb

    info = {**host_info(), "lancedb": lancedb.__version__}
    results = run(
        rows_list,
        args.writes,
        args.batch,
        args.dim,
        args.compact_every,
        args.data_dir,
        variants,
        args.max_compaction_s,
        args.compactions,
    )
    command = " ".join(["bench/lancedb_writes.py", *sys.argv[1:]])
    run_settings = {
        "writes": args.writes,
        "batch": args.batch,
        "dim": args.dim,
        "compact_every_writes": args.compact_every,
    }
    report = {
        "benchmark": "lancedb_writes",
        "machine": info,
        "command": command,
        "settings": run_settings,
        "results": results,
    }
    lines = [
        "# LanceDB: cost of one index write as the table grows",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores; load average at start {info['load_avg_at_start']}; "
        f"lancedb {info['lancedb']}.",
        f"Command: `{command}`",
        f"Each write: `LanceDBVectorStore.upsert` of {args.batch} new {args.dim}-d records; key_index/no_key_index: "
        f"{args.writes} writes per row, compaction every {args.compact_every} writes included in the means; "
        f"*_compaction: a compaction every {args.compact_every} writes, at most once per 10 s, until "
        f"{args.compactions} have ended.",
        "",
        *table_lines(results),
    ]
    label = f"{args.label}_" if args.label else ""
    write_report(RESULTS / f"lancedb_writes_{label}{dt.date.today().isoformat()}", report, "\n".join(lines))


if __name__ == "__main__":
    main()
