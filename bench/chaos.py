"""Chaos run, long version (issue #5): thousands of uploads arrive while cpu, gpu and index
workers are kill -9-ed in turn and replaced, and redis-server restarts once; afterwards every
upload is accounted for (exactly one terminal state, one result event, one vector record per
indexed upload). The CI-sized version is tests/robustness/test_chaos.py.

    PYTHONPATH=$PWD .venv/bin/python bench/chaos.py --uploads 2000
    PYTHONPATH=$PWD .venv/bin/python bench/chaos.py --uploads 2000 --crash-redis   # SIGKILL instead of SIGTERM

Uses the embedded stack with the tiny random model (the pipeline, not the model, is under
test) and short clocks (visibility timeout 10 s, stall timeout 12 s). Results:
bench/results/chaos_<uploads>_<redis restart>_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_report
from producers.client import Client
from producers.stack import Stack
from tests.support.chaos import ChaosReport, run_chaos, synthetic_upload
from tests.support.stack import stack_settings

RESULTS = Path(__file__).resolve().parent / "results"
CLOCKS: dict[str, Any] = {
    "visibility_timeout_s": 10,
    "task_time_limit_s": 4,
    "unacked_restore_interval_s": 1,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 1,
    "stall_timeout_s": 12,
    "sweep_interval_s": 2,
    "max_deliveries": 8,
}


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="omnibind-chaos-"))
    settings = stack_settings(workdir, workdir / "model-cache", worker={**CLOCKS, "cpu_concurrency": args.cpu_workers})
    (workdir / "logs").mkdir()
    started = time.monotonic()
    with Stack(settings, log_dir=workdir / "logs").start(ready_timeout_s=300) as stack:
        connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
        with Client(connected, source="bench-chaos") as client:
            uploads = [synthetic_upload(i, run="bench") for i in range(args.uploads)]
            report: ChaosReport = run_chaos(
                stack,
                client,
                uploads,
                rate_per_s=args.rate,
                kill_every_s=args.kill_every,
                restart_redis_after_kills=args.redis_after_kills,
                min_kills_per_kind=1,
                finish_timeout_s=args.finish_timeout,
                crash_redis=args.crash_redis,
                on_event=lambda line: print(line, flush=True),
            )
    accounting = report.accounting
    assert accounting is not None
    return {
        "benchmark": "chaos",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(sys.argv),
        "settings": {
            "rate_per_s": args.rate,
            "kill_every_s": args.kill_every,
            "redis_restart_after_kills": args.redis_after_kills,
            "redis_restart": "SIGKILL" if args.crash_redis else "SIGTERM",
            "cpu_workers": args.cpu_workers,
            **CLOCKS,
        },
        "report": report.as_dict(),
        "problems": accounting.problems(),
        "wall_s": round(time.monotonic() - started, 1),
        "workdir": str(workdir),
    }


def markdown(result: dict[str, Any]) -> str:
    report = result["report"]
    lines = [
        f"# Chaos run: {report['uploads']} uploads, {sum(report['kills'].values())} kill -9, "
        f"{report['redis_restarts']} redis restart ({result['settings']['redis_restart']})",
        "",
        f"- date: {result['date']}; machine: {result['machine']}",
        f"- command: `{result['command']}`",
        f"- kills per kind: {report['kills']}; redis down {report['redis_down_s']} s",
        f"- submissions retried while Redis restarted: {report['retried_submissions']}; "
        f"workers that exited on their own and were restarted: {report['workers_restarted_after_exiting']}",
        f"- first submission to last upload finished: {report['ingest_s']} s",
        "",
        "| what | count |",
        "|---|---|",
        *(f"| status {status} | {n} |" for status, n in (report["statuses"] or {}).items()),
        *(f"| failure reason {reason} | {n} |" for reason, n in (report["failure_reasons"] or {}).items()),
        *(f"| uploads with {k} result event(s) | {n} |" for k, n in (report["result_events_per_upload"] or {}).items()),
        *(
            f"| indexed uploads with {k} vector record(s) | {n} |"
            for k, n in (report["records_per_indexed_upload"] or {}).items()
        ),
        f"| vector records of no indexed upload | {report['stray_records']} |",
        "",
        "Guarantees broken: " + ("; ".join(result["problems"]) if result["problems"] else "none"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=25.0, help="uploads submitted per second")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between two kill -9")
    parser.add_argument("--redis-after-kills", type=int, default=10, help="restart redis-server after this many kills")
    parser.add_argument("--crash-redis", action="store_true", help="SIGKILL redis-server instead of SIGTERM")
    parser.add_argument("--cpu-workers", type=int, default=2)
    parser.add_argument("--finish-timeout", type=float, default=900.0)
    args = parser.parse_args()
    result = run(args)
    kind = "redis-sigkill" if args.crash_redis else "redis-sigterm"
    write_report(RESULTS / f"chaos_{args.uploads}_{kind}_{dt.date.today().isoformat()}", result, markdown(result))
    sys.exit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
