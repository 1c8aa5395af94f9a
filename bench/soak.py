"""Steady state of the embedded stack over a long stream of uploads (issue #12, item 5).

The stack of `omnibind up` — embedded redis-server, cpu/gpu/index Celery workers, LanceDB
under the data dir — with the tiny model, plus the HTTP API (`omnibind serve`) as its own
process. A producer submits ``--uploads`` small uploads (``--mix``: inline texts through
`Client.submit_text`, 96x96 JPEGs through `Client.submit`, each unique), keeping at most two
chunks of ``--chunk`` in flight, and every ``--every`` uploads records:

- the index worker's RSS (and the cpu and gpu workers' process trees, for context);
- the vectors folder: table versions, data files, MB on disk, and the bytes the current
  version references (`Table.stats().total_bytes`: data + index files) — disk / data is
  the "within 2x of the data" bound;
- HTTP search p50/p95 (``--queries`` text searches through ``POST /v1/search``, k = 10);
- uploads/s since the last sample and the load average (other work shares the machine).

Results: bench/results/soak_<uploads>_<label>_<date>.{json,md}. A benchmark, not a test.

    PYTHONPATH=$PWD .venv/bin/python bench/soak.py --uploads 100000 --every 5000
    PYTHONPATH=$PWD .venv/bin/python bench/soak.py --uploads 20000 --max-s 3000 --label capped

SIGTERM or SIGINT stops the run at its next sample; the report is written all the same.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lancedb_soak import on_disk
from bench.machine import host_info
from bench.process_rss import answers, running, wait_for
from bench.report import write_report
from producers.client import Client
from producers.embedded_redis import free_port
from producers.stack import Stack
from shared.config import Settings
from shared.errors import Busy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORDS = "dog cat car beach rain party sofa river mountain city night red green blue old small running".split()  # noqa: SIM905
QUERIES = ["a dog on a beach", "a red car in the rain", "a cat asleep on a sofa", "a city at night"]
MB = 2**20
# Set by SIGTERM/SIGINT: the run stops at its next sample and still writes its report.
STOP = threading.Event()


# -- uploads ------------------------------------------------------------------------------------


def caption(rng: np.random.Generator, i: int) -> str:
    return " ".join(rng.choice(WORDS, size=6)) + f" #{i}"


def jpeg(rng: np.random.Generator) -> bytes:
    """A unique 96x96 JPEG (a few kB): smooth colour blocks, not incompressible noise."""
    blocks = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((96, 96), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def submit_one(client: Client, kind: str, rng: np.random.Generator, i: int) -> str:
    while True:
        try:
            if kind == "text":
                return client.submit_text(caption(rng, i))
            return client.submit(jpeg(rng), filename=f"soak-{i}.jpg", content_type="image/jpeg")
        except Busy:  # the pipeline's backpressure: wait as a well-behaved producer does
            time.sleep(0.5)


# -- sampling -----------------------------------------------------------------------------------


def tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / MB, 1)


def worker_rss(stack: Stack) -> dict[str, float]:
    out: dict[str, float] = {}
    for worker in stack.workers:
        if worker.process.poll() is None:
            out[worker.kind] = out.get(worker.kind, 0.0) + tree_rss_mb(worker.process.pid)
    return out


def table_stats(path: Path, table: str) -> dict[str, Any]:
    """Rows, fragments and the bytes the current version references (data + indexes)."""
    import lancedb

    try:
        stats: Any = lancedb.connect(path).open_table(table).stats()  # a dict at run time (lancedb 0.40)
    except Exception as exc:  # not created yet, or a version cleaned up under us
        return {"stats_error": str(exc)[:120]}
    return {
        "rows": int(stats["num_rows"]),
        "fragments": int(stats["fragment_stats"]["num_fragments"]),
        "live_mb": round(stats["total_bytes"] / MB, 2),
    }


def http_search_ms(url: str, queries: int) -> tuple[float, float]:
    timings = []
    for i in range(queries):
        body = json.dumps({"text": QUERIES[i % len(QUERIES)], "k": 10}).encode()
        request = urllib.request.Request(
            f"{url}/v1/search", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        timings.append((time.perf_counter() - started) * 1000)
    return round(float(np.percentile(timings, 50)), 1), round(float(np.percentile(timings, 95)), 1)


# -- the run ------------------------------------------------------------------------------------


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = Settings(
        data_dir=workdir / "data",
        model={"name": "tiny"},  # type: ignore[arg-type]
        redis={"embedded_port": 0},  # type: ignore[arg-type]
        log_level="WARNING",
    )
    (workdir / "logs").mkdir(parents=True)
    mix = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    kinds = [k for k, weight in mix.items() for _ in range(weight)]
    rng = np.random.default_rng(0)
    samples: list[dict[str, Any]] = []
    failed: dict[str, int] = {}
    with Stack(settings, log_dir=workdir / "logs") as stack:
        connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = [sys.executable, "-m", "producers.cli", "serve", "--port", str(port)]
        with running(api, stack.child_env(), ROOT, workdir / "logs" / "api.log"):
            wait_for(answers(f"{url}/healthz"), "the HTTP API")
            with Client(connected, source="soak") as client:
                started = last_t = time.perf_counter()
                last_done = done = 0
                pending: list[str] = []
                while done < args.uploads:
                    chunk = [
                        submit_one(client, kinds[i % len(kinds)], rng, i)
                        for i in range(done + len(pending), min(args.uploads, done + len(pending) + args.chunk))
                    ]
                    # Wait for the previous chunk while this one is queued: the pipeline stays busy.
                    if pending:
                        for record in client.wait(pending, timeout_s=args.timeout).values():
                            if record.status.value != "indexed":
                                failed[record.status.value] = failed.get(record.status.value, 0) + 1
                        done += len(pending)
                    pending = chunk
                    if done - last_done >= args.every or done >= args.uploads:
                        now = time.perf_counter()
                        p50, p95 = http_search_ms(url, args.queries)
                        sample = {
                            "uploads": done,
                            "elapsed_s": round(now - started, 1),
                            "uploads_per_s": round((done - last_done) / (now - last_t), 1),
                            "rss_mb": worker_rss(stack),
                            **table_stats(settings.vectors_path, settings.vectors.table),
                            **on_disk(settings.vectors_path, settings.vectors.table),
                            "search_p50_ms": p50,
                            "search_p95_ms": p95,
                            "not_indexed": dict(failed),
                            "load_avg": [round(x, 2) for x in os.getloadavg()],
                        }
                        samples.append(sample)
                        print(sample, flush=True)
                        last_done, last_t = done, time.perf_counter()
                        if now - started > args.max_s or STOP.is_set():
                            stopped = "a signal" if STOP.is_set() else f"the {args.max_s:g} s cap"
                            print(f"stopping on {stopped}: {done:,} of {args.uploads:,} uploads", flush=True)
                            if pending:
                                client.wait(pending, timeout_s=args.timeout)
                            break
                    if not chunk:
                        break
    return {"samples": samples, "mix": mix, "not_indexed": failed}


def markdown(report: dict[str, Any]) -> str:
    info, samples = report["machine"], report["samples"]
    last = samples[-1]
    lines = [
        f"# Embedded stack soak: {last['uploads']:,} uploads through the `omnibind up` stack ({report['label']})",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB; load average at start "
        f"{info['load_avg_at_start']} (other sessions' work shared the cores); lancedb {info['lancedb']}.",
        f"Command: `{report['command']}`",
        f"Stack: embedded redis-server, cpu/gpu/index Celery workers (tiny model, 32-d), LanceDB with its "
        f"defaults, HTTP API (`omnibind serve`) in its own process. Uploads: mix {report['mix']} (inline texts, "
        f"96x96 JPEGs), each unique, at most two chunks of {report['settings']['chunk']} in flight. Search: "
        f"{report['settings']['queries']} text queries through `POST /v1/search` (k = 10) per sample, "
        "embedding the query included. Disk / live = the vectors folder over the bytes the current version "
        "references (data + index files).",
        "",
        "| uploads | s | uploads/s | index worker RSS MB | cpu / gpu worker RSS MB | rows | fragments | versions "
        "| data files | disk MB | live MB | disk / live | search p50 / p95 ms | not indexed | load 1 min |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in samples:
        rss = s["rss_mb"]
        live = s.get("live_mb") or 0
        ratio = round(s["disk_mb"] / live, 2) if live else ""
        lines.append(
            f"| {s['uploads']:,} | {s['elapsed_s']} | {s['uploads_per_s']} | {rss.get('index', '')} | "
            f"{rss.get('cpu', '')} / {rss.get('gpu', '')} | {s.get('rows', '')} | {s.get('fragments', '')} | "
            f"{s['versions']} | {s['data_files']} | {s['disk_mb']} | {live} | {ratio} | "
            f"{s['search_p50_ms']} / {s['search_p95_ms']} | {s['not_indexed'] or ''} | {s['load_avg'][0]} |"
        )
    lines.append("")
    if last["uploads"] < report["settings"]["uploads"]:
        lines.append(
            f"Stopped (by a signal or after {report['settings']['max_s']:g} s) before all "
            f"{report['settings']['uploads']:,} uploads.\n"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=100_000)
    parser.add_argument("--mix", default="text=3,image=1", help="weights per kind (text, image)")
    parser.add_argument("--chunk", type=int, default=500, help="uploads submitted between waits")
    parser.add_argument("--every", type=int, default=5000, help="uploads between samples")
    parser.add_argument("--queries", type=int, default=20, help="HTTP searches per sample")
    parser.add_argument("--timeout", type=float, default=1800.0, help="longest wait for one chunk")
    parser.add_argument("--max-s", type=float, default=36_000.0, help="stop after this long (at a sample)")
    parser.add_argument("--label", default="tiny", help="names the result files")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the stack's data lives (default: temp)")
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: STOP.set())
    # The version without importing lancedb here: this process forks `omnibind serve`.
    info = {**host_info(), "lancedb": importlib.metadata.version("lancedb")}
    with tempfile.TemporaryDirectory(prefix="omnibind-soak-", dir=args.data_dir) as tmp:
        measured = soak(args, Path(tmp))
    report = {
        "benchmark": "soak",
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "command": " ".join(["bench/soak.py", *sys.argv[1:]]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **measured,
    }
    stem = f"soak_{measured['samples'][-1]['uploads']}_{args.label}_{dt.date.today().isoformat()}"
    write_report(RESULTS / stem, report, markdown(report))


if __name__ == "__main__":
    main()
