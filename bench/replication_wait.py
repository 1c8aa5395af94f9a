"""What confirming an upload only once a replica holds it costs (``OMNIBIND_REDIS__WAIT_REPLICAS``,
shared/replication.py), and what reaching Redis through Sentinel costs per command.

    PYTHONPATH=$PWD .venv/bin/python bench/replication_wait.py --uploads 2000

Starts a real Sentinel group (tests/support/sentinel.py: redis-server primary + replica,
three sentinels, loopback) and submits inline-text uploads with `producers.client.Client`
(status record, Celery message) — no workers, so only the producer's side is timed — in
interleaved blocks of 100 per variant, so that load from other jobs falls on every variant
alike:

- ``direct``: ``redis://`` to the primary, no WAIT (what a deployment without Sentinel does);
- ``sentinel``: ``redis+sentinel://``, no WAIT;
- ``sentinel+wait1``: ``redis+sentinel://`` with ``wait_replicas=1``.

Per variant: submission latency (p50/p90/p99) and the primary's commands per submission
(INFO commandstats before/after each block). Results: bench/results/replication_wait_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.report import write_report
from producers.client import Client
from shared.config import Settings
from tests.support.sentinel import SentinelGroup

BLOCK = 100


def commandstats(client: Any) -> Counter[str]:
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=2000, help="submissions per variant")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="omnibind-wait-") as tmp:
        group = SentinelGroup(Path(tmp) / "group").start()
        try:
            primary = group.primary()
            direct_url = f"redis://127.0.0.1:{primary.port}/0"
            base: dict[str, Any] = {"data_dir": Path(tmp) / "data", "backpressure": {"max_cpu_queue": 0}}
            clients = {
                "direct": Client(Settings(redis_url=direct_url, **base), source="bench"),
                "sentinel": Client(Settings(redis_url=group.url, **base), source="bench"),
                "sentinel+wait1": Client(
                    Settings(redis_url=group.url, redis={"wait_replicas": 1}, **base), source="bench"
                ),
            }
            latencies: dict[str, list[float]] = defaultdict(list)
            commands: dict[str, Counter[str]] = defaultdict(Counter)
            probe = primary.client()
            for client in clients.values():  # connect, load scripts: not part of the timing
                client.submit_text("warm-up")
            for block in range(args.uploads // BLOCK):
                for name, client in clients.items():
                    before = commandstats(probe)
                    for i in range(BLOCK):
                        started = time.perf_counter()
                        client.submit_text(f"upload {block}-{i} via {name}")
                        latencies[name].append(time.perf_counter() - started)
                    after = commandstats(probe)
                    after.subtract(before)
                    after["info"] -= 1  # our own INFO
                    commands[name].update(after)
            for client in clients.values():
                client.close()
        finally:
            group.close()

    rows = {}
    for name, values in latencies.items():
        per_upload = {k: round(v / len(values), 2) for k, v in sorted(commands[name].items()) if v > 0}
        rows[name] = {
            "submissions": len(values),
            "p50_ms": round(statistics.median(values) * 1000, 3),
            "p90_ms": round(percentile(values, 0.9) * 1000, 3),
            "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            "commands_per_submission": round(sum(per_upload.values()), 2),
            "commands": per_upload,
        }
    report = {"date": dt.date.today().isoformat(), "host": host_info(), "block": BLOCK, "variants": rows}
    lines = [
        f"# Confirming uploads on a replica (WAIT) — {report['date']}",
        "",
        f"Host: {report['host']}. Inline-text submissions through `Client.submit_text`, no workers; "
        f"interleaved blocks of {BLOCK}; Sentinel group on loopback (primary + 1 replica + 3 sentinels).",
        "",
        "| variant | submissions | p50 ms | p90 ms | p99 ms | primary commands / submission |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {r['submissions']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | "
            f"{r['commands_per_submission']} |"
            for name, r in rows.items()
        ),
        "",
        "Commands per submission:",
        "",
        *(f"- {name}: {r['commands']}" for name, r in rows.items()),
        "",
    ]
    write_report(args.out / f"replication_wait_{report['date']}", report, "\n".join(lines))


if __name__ == "__main__":
    main()
