"""Fairness between tenants: does one tenant's flood starve another's trickle?

    PYTHONPATH=$PWD .venv/bin/python bench/fairness.py --flood 600 --trickle-s 30
    PYTHONPATH=$PWD .venv/bin/python bench/fairness.py --flood 20000 --fair --window 4 --tag fair
    PYTHONPATH=$PWD .venv/bin/python bench/fairness.py --store weaviate --flood 20000 --fair --window 2 \
        --max-cpu-queue 0 --no-drain --flood-first --trickle-s 60

Starts the embedded stack (real redis-server, real Celery workers, tiny random model) and
runs two phases on it, both with inline text uploads (the cheapest kind, so the pipeline's
scheduling, not the model, is what is measured):

* **alone**: tenant B submits 2 uploads a second for `--trickle-s` seconds;
* **flood**: tenant A submits `--flood` uploads as fast as the client can, and B's trickle
  starts at the same moment.

Recorded per phase: B's upload-to-indexed latency (the status record's ``queued`` ->
``indexed`` timestamps) p50/p95/max, and in the flood phase A's submit and drain times. The
issue's target is B's p95 under the flood within 2x of B's p95 alone. `--fair` turns on the
fair queues (``OMNIBIND_FAIRNESS__*``, `shared.fair_queue`) with `--window`. `--store weaviate`
writes the vectors to a real Weaviate server (the production shape's store; `make servers`
builds it) instead of the embedded LanceDB. Not a test: a
measurement on a shared machine (the load average at the start is recorded).

Results: bench/results/fairness_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.report import write_report
from producers.client import Client
from producers.stack import Stack
from shared.errors import Busy
from shared.events import UploadStatus
from tests.support.stack import stack_settings
from tests.support.weaviate_server import WeaviateServer

RESULTS = Path(__file__).resolve().parent / "results"


def trickle(client: Client, tenant: str, tag: str, rate_per_s: float, duration_s: float) -> list[str]:
    """Submit `rate_per_s` uploads a second for `duration_s`; returns their ids."""
    ids: list[str] = []
    started = time.monotonic()
    n = 0
    while (due := started + n / rate_per_s) < started + duration_s:
        time.sleep(max(0.0, due - time.monotonic()))
        ids.append(
            client.submit_text(
                f"{tenant} note {tag} {n}: a kite over the bay", upload_id=f"{tenant}:{tag}-{n}", tenant=tenant
            )
        )
        n += 1
    return ids


def flood(client: Client, tenant: str, count: int, out: dict[str, Any]) -> None:
    """Submit `count` uploads as fast as accepted: a refusal (`Busy`: the tenant's unfinished
    limit) is retried after a short pause, as a well-behaved client honouring 429 would."""
    started = time.monotonic()
    out["ids"], out["refusals"] = [], 0
    for n in range(count):
        while True:
            try:
                text = f"{tenant} flood {n}: a lighthouse at dusk"
                out["ids"].append(client.submit_text(text, upload_id=f"{tenant}:flood-{n}", tenant=tenant))
                break
            except Busy:
                out["refusals"] += 1
                time.sleep(0.05)
    out["submit_s"] = round(time.monotonic() - started, 1)


_STAGES = (UploadStatus.QUEUED, UploadStatus.PREPROCESSED, UploadStatus.EMBEDDED, UploadStatus.INDEXED)


def latencies_s(
    client: Client, ids: list[str], timeout_s: float, out: dict[str, list[float]] | None = None
) -> list[float]:
    """Upload-to-indexed latencies of `ids`; into `out` each stage's part, keyed by the status
    it ends at (``preprocessed``: waiting for a turn and in the cpu queue, plus preprocessing;
    ``embedded``: the gpu queue and batch; ``indexed``: moderation and the vector write)."""
    records = client.wait(ids, timeout_s=timeout_s)
    found = []
    for record in records.values():
        stamps = record.timestamps
        if record.status is UploadStatus.INDEXED and UploadStatus.QUEUED in stamps and UploadStatus.INDEXED in stamps:
            found.append((stamps[UploadStatus.INDEXED] - stamps[UploadStatus.QUEUED]).total_seconds())
            if out is not None and all(stage in stamps for stage in _STAGES):
                for before, after in itertools.pairwise(_STAGES):
                    out.setdefault(after.value, []).append((stamps[after] - stamps[before]).total_seconds())
    return sorted(found)


def summary(values: list[float], expected: int) -> dict[str, Any]:
    if not values:
        return {"indexed": 0, "of": expected}
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return {
        "indexed": len(values),
        "of": expected,
        "p50_s": round(statistics.median(values), 3),
        "p95_s": round(p95, 3),
        "max_s": round(values[-1], 3),
    }


def stage_summary(parts: dict[str, list[float]], expected: int) -> dict[str, Any]:
    return {stage: summary(sorted(values), expected) for stage, values in parts.items()}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.store != "weaviate":
        return _measure(args, workdir, {})
    weaviate = WeaviateServer(workdir / "weaviate").start()  # the production store (`make servers`)
    try:
        return _measure(args, workdir, weaviate.address.vector_settings(collection="Fairness"))
    finally:
        weaviate.stop()


def _measure(args: argparse.Namespace, workdir: Path, vectors: dict[str, Any]) -> dict[str, Any]:
    settings = stack_settings(
        workdir / "stack",
        workdir / "model-cache",
        worker={"cpu_concurrency": args.cpu_workers},
        backpressure={"max_inflight_per_tenant": args.max_inflight, "max_cpu_queue": args.max_cpu_queue},
        fairness={"enabled": args.fair, "window": args.window},
        **({"vectors": vectors} if vectors else {}),
    )
    (workdir / "stack" / "logs").mkdir(parents=True)
    with Stack(settings, log_dir=workdir / "stack" / "logs").start(ready_timeout_s=300) as stack:
        connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
        with Client(connected, source="bench-fairness") as client:
            warm = trickle(client, "beta", "warm", 4, 2)
            client.wait(warm, timeout_s=args.timeout_s)
            alone_ids = trickle(client, "beta", "alone", args.rate, args.trickle_s)
            alone_parts: dict[str, list[float]] = {}
            alone = summary(latencies_s(client, alone_ids, args.timeout_s, alone_parts), len(alone_ids))
            alone["stages"] = stage_summary(alone_parts, len(alone_ids))

            flooded: dict[str, Any] = {}
            flooder = threading.Thread(target=flood, args=(client, "acme", args.flood, flooded), daemon=True)
            started = time.monotonic()
            flooder.start()
            if args.flood_first:  # A's backlog is all queued before B's trickle begins
                flooder.join()
                flooded["indexed_when_trickle_began"] = len(client.wait(flooded["ids"], timeout_s=0))
            under_ids = trickle(client, "beta", "flood", args.rate, args.trickle_s)
            flooder.join()
            parts: dict[str, list[float]] = {}
            under = summary(latencies_s(client, under_ids, args.timeout_s, parts), len(under_ids))
            under["stages"] = stage_summary(parts, len(under_ids))
            if args.no_drain:  # A's backlog is not waited for: how much of it was done by now
                flood_drain_s = None
                flooded["indexed_when_stopped"] = len(client.wait(flooded["ids"], timeout_s=0))
                flooded["stopped_after_s"] = round(time.monotonic() - started, 1)
            else:
                client.wait(flooded["ids"], timeout_s=args.timeout_s)
                flood_drain_s = round(time.monotonic() - started, 1)
    ratio = round(under["p95_s"] / alone["p95_s"], 1) if alone.get("p95_s") and under.get("p95_s") else None
    return {
        "alone": alone,
        "under_flood": under,
        "p95_ratio": ratio,
        "flood": {
            "uploads": args.flood,
            "submit_s": flooded["submit_s"],
            "refusals": flooded["refusals"],
            "all_indexed_after_s": flood_drain_s,
            "indexed_when_stopped": flooded.get("indexed_when_stopped"),
            "stopped_after_s": flooded.get("stopped_after_s"),
            "submitted_before_trickle": args.flood_first,
            "indexed_when_trickle_began": flooded.get("indexed_when_trickle_began"),
        },
        "max_cpu_queue": args.max_cpu_queue,
        "max_inflight_per_tenant": args.max_inflight,
        "fairness": {"enabled": args.fair, "window": args.window} if args.fair else None,
        "store": args.store,
    }


def _fairness(fairness: dict[str, Any] | None) -> str:
    return f"on, window {fairness['window']}" if fairness else "off (one FIFO cpu queue)"


_STAGE_NAMES = ("preprocessed", "embedded", "indexed")


def _stage_p95(phase: dict[str, Any], stage: str) -> Any:
    return phase.get("stages", {}).get(stage, {}).get("p95_s")


def markdown(result: dict[str, Any]) -> str:
    a, u = result["result"]["alone"], result["result"]["under_flood"]
    f = result["result"]["flood"]

    def row(name: str, s: dict[str, Any]) -> str:
        return f"| {name} | {s['indexed']}/{s['of']} | {s.get('p50_s')} s | {s.get('p95_s')} s | {s.get('max_s')} s |"

    return "\n".join(
        [
            f"# Fairness: tenant B's trickle alone and under tenant A's flood ({result['date']})",
            "",
            f"Machine: {result['machine']}. Command: `{result['command']}`. "
            f"Unfinished uploads per tenant: {result['result'].get('max_inflight_per_tenant') or 'no limit'}. "
            f"Fair queues: {_fairness(result['result'].get('fairness'))}. "
            f"Vector store: {result['result'].get('store', 'lancedb')}.",
            "",
            "| B (2 uploads/s) | indexed | p50 | p95 | max |",
            "|---|---|---|---|---|",
            row("alone", a),
            row("under A's flood", u),
            "",
            "B's p95 per stage (s), alone / under the flood: "
            + ", ".join(f"{stage} {_stage_p95(a, stage)} / {_stage_p95(u, stage)}" for stage in _STAGE_NAMES)
            + " (each from the previous status; preprocessed = the turn, the cpu queue and preprocessing).",
            "",
            f"B's p95 under the flood / alone: **{result['result']['p95_ratio']}x** (target: within 2x). "
            f"A's flood: {f['uploads']} uploads submitted in {f['submit_s']} s "
            + (
                f"before B's trickle began ({f['indexed_when_trickle_began']} of them indexed by then), "
                if f.get("submitted_before_trickle")
                else "while B's trickle ran, "
            )
            + (
                f"all indexed {f['all_indexed_after_s']} s after it began."
                if f.get("all_indexed_after_s") is not None
                else f"not waited for: {f['indexed_when_stopped']} indexed when the run stopped "
                f"{f['stopped_after_s']} s after it began."
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=600, help="tenant A's uploads")
    parser.add_argument("--rate", type=float, default=2.0, help="tenant B's uploads per second")
    parser.add_argument("--trickle-s", type=float, default=30.0)
    parser.add_argument("--cpu-workers", type=int, default=2)
    parser.add_argument(
        "--max-inflight", type=int, default=0, help="OMNIBIND_BACKPRESSURE__MAX_INFLIGHT_PER_TENANT (0: no limit)"
    )
    parser.add_argument("--fair", action="store_true", help="OMNIBIND_FAIRNESS__ENABLED: per-tenant fair queues")
    parser.add_argument("--window", type=int, default=4, help="OMNIBIND_FAIRNESS__WINDOW (with --fair)")
    parser.add_argument(
        "--max-cpu-queue",
        type=int,
        default=10_000,
        help="OMNIBIND_BACKPRESSURE__MAX_CPU_QUEUE (0: none; with --fair it counts every tenant's waiting uploads)",
    )
    parser.add_argument("--no-drain", action="store_true", help="stop after B's trickle: don't wait for A's backlog")
    parser.add_argument(
        "--flood-first",
        action="store_true",
        help="submit all of A's flood before B's trickle begins (B meets A's backlog, not A's submitting "
        "client, which on one small machine takes CPU from the workers)",
    )
    parser.add_argument(
        "--store",
        choices=["lancedb", "weaviate"],
        default="lancedb",
        help="vector store: the embedded LanceDB, or a real Weaviate server (the production store; `make servers`)",
    )
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="omnibind-fairness-"))
    started = time.monotonic()
    result = {
        "benchmark": "fairness",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": host_info(),
        "command": " ".join(sys.argv),
        "result": run(args, workdir),
        "wall_s": round(time.monotonic() - started, 1),
        "workdir": str(workdir),
    }
    stem = f"fairness{'_' + args.tag if args.tag else ''}_{dt.date.today().isoformat()}"
    write_report(RESULTS / stem, result, markdown(result))


if __name__ == "__main__":
    main()
