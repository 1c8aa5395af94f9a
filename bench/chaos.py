"""Chaos run, long version (issue #5): thousands of uploads arrive while cpu, gpu and index
workers are kill -9-ed in turn and replaced, and redis-server restarts once; afterwards every
upload is accounted for (exactly one terminal state, one result event, one vector record per
indexed upload). The CI-sized version is tests/robustness/test_chaos.py.

    PYTHONPATH=$PWD .venv/bin/python bench/chaos.py --uploads 2000
    PYTHONPATH=$PWD .venv/bin/python bench/chaos.py --uploads 2000 --crash-redis   # SIGKILL instead of SIGTERM
    PYTHONPATH=$PWD .venv/bin/python bench/chaos.py --shape production --uploads 600 --minio-down 30
    PYTHONPATH=$PWD .venv/bin/python bench/chaos.py --uploads 1000 --delete-every 5 --refuse-every-kills 3

``--delete-every N`` deletes about one upload in N (chosen by a hash of its id, so across
kinds) right after submitting it (while its run is in flight: the delete waits for it); the
accounting then wants no vector record of a deleted upload and no deletion pending or
dead-lettered. ``--refuse-every-kills K`` makes Redis refuse
writes for ``--refuse-s`` seconds after every K-th kill, alternating ``min-replicas-to-write
1`` (every write refused, BRPOP included: NOREPLICAS) and ``maxmemory 1`` under noeviction
(OOM); producers retry, workers must ride it out (the run counts workers that exited).

``--shape production`` runs the production shape instead (tests/support/production.py: real
MinIO with notifications to Redis, Weaviate, `omnibind bridge`, Celery workers): objects are
written to MinIO with the SDK while Weaviate is SIGKILLed and restarted and MinIO is stopped
for ``--minio-down`` seconds (tests/support/production_chaos.py). Needs `make servers`.

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

from bench.machine import host_info
from bench.report import write_report
from producers.client import Client
from producers.stack import Stack
from tests.support.chaos import ChaosReport, run_chaos, synthetic_upload
from tests.support.production import production_shape
from tests.support.production_chaos import PRODUCTION_CLOCKS, run_production_chaos
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
                delete_every=args.delete_every,
                refuse_every_kills=args.refuse_every_kills,
                refuse_s=args.refuse_s,
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
            "delete_every": args.delete_every,
            "refuse_every_kills": args.refuse_every_kills,
            "refuse_s": args.refuse_s,
            **CLOCKS,
        },
        "report": report.as_dict(),
        "problems": accounting.problems(),
        "wall_s": round(time.monotonic() - started, 1),
        "workdir": str(workdir),
    }


def run_production(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="omnibind-chaos-production-"))
    started = time.monotonic()
    worker = {**PRODUCTION_CLOCKS, "cpu_concurrency": args.cpu_workers}
    with production_shape(workdir, workdir / "model-cache", worker=worker) as shape:
        report = run_production_chaos(
            shape,
            objects=args.uploads,
            rate_per_s=args.rate,
            minio_down_s=args.minio_down,
            finish_timeout_s=args.finish_timeout,
        )
    return {
        "benchmark": "chaos-production",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": host_info(),
        "command": " ".join(sys.argv),
        "settings": {"rate_per_s": args.rate, "minio_down_s": args.minio_down, **worker},
        "report": report.as_dict(),
        "problems": report.problems(),
        "wall_s": round(time.monotonic() - started, 1),
        "workdir": str(workdir),
    }


def production_markdown(result: dict[str, Any]) -> str:
    report = result["report"]
    return "\n".join(
        [
            f"# Chaos on the production shape: {report['objects']} objects written to MinIO",
            "",
            f"- date: {result['date']}; machine: {result['machine']}",
            f"- command: `{result['command']}`",
            f"- Weaviate SIGKILLed {report['weaviate_kills']}x, down {report['weaviate_down_s']} s; "
            f"MinIO stopped {report['minio_stops']}x, down {report['minio_down_s']} s; "
            f"puts retried while MinIO was down: {report['put_retries']}",
            f"- first put to last upload finished: {report['ingest_s']} s",
            "",
            "| what | count |",
            "|---|---|",
            *(f"| status {status} | {n} |" for status, n in report["statuses"].items()),
            *(f"| failure reason {reason} | {n} |" for reason, n in report["failure_reasons"].items()),
            *(
                f"| indexed uploads with {k} Weaviate object(s) | {n} |"
                for k, n in report["weaviate_objects_per_indexed_upload"].items()
            ),
            f"| Weaviate objects of no indexed upload | {report['stray_objects']} |",
            "",
            "Guarantees broken: " + ("; ".join(result["problems"]) if result["problems"] else "none"),
            "",
        ]
    )


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
        f"- Redis refused writes: {report['redis_refusals'] or 'never'} ({report['redis_refused_s']} s in all)",
        f"- first submission to last upload finished: {report['ingest_s']} s",
        "",
        "| what | count |",
        "|---|---|",
        *(
            [
                f"| deleted while in flight | {report['deleted']} |",
                f"| deleted uploads still with a vector record | {report['deleted_with_records']} |",
                f"| deletions pending / dead-lettered at the end | {report['pending_deletions']} / "
                f"{report['dead_deletions']} |",
            ]
            if report["deleted"]
            else []
        ),
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
    parser.add_argument(
        "--shape", choices=["embedded", "production"], default="embedded", help="which stack to torment"
    )
    parser.add_argument("--minio-down", type=float, default=30.0, help="production: seconds MinIO stays stopped")
    parser.add_argument("--delete-every", type=int, default=0, help="delete ~1 upload in n while in flight")
    parser.add_argument("--refuse-every-kills", type=int, default=0, help="Redis refuses writes after every k-th kill")
    parser.add_argument("--refuse-s", type=float, default=2.0, help="seconds each refusal lasts")
    args = parser.parse_args()
    if args.shape == "production":
        result = run_production(args)
        stem = f"chaos_production_{args.uploads}_{dt.date.today().isoformat()}"
        write_report(RESULTS / stem, result, production_markdown(result))
        sys.exit(1 if result["problems"] else 0)
    result = run(args)
    kind = "redis-sigkill" if args.crash_redis else "redis-sigterm"
    variants = ("_deletes" if args.delete_every else "") + ("_refusals" if args.refuse_every_kills else "")
    stem = f"chaos_{args.uploads}_{kind}{variants}_{dt.date.today().isoformat()}"
    write_report(RESULTS / stem, result, markdown(result))
    sys.exit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
