"""The Celery floor: what three no-op Celery hops cost on this machine (issue #6).

omnibind's pipeline is three Celery stages (cpu -> gpu -> index). This benchmark runs the
same three hops with the same Celery configuration, queues, pools and message sizes, but
no work in them (bench/celery_floor_app.py), and reports CPU milliseconds per upload per
process kind and uploads/s. Subtracting it from bench/pipeline_throughput.py's text-only
numbers separates what omnibind adds (status, delivery counting, moderation, the vector
store) from what Celery itself costs. Results: bench/results/celery_floor_<date>.{json,md}.

    python bench/celery_floor.py --uploads 3000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import host_info  # noqa: E402
from bench.report import write_report  # noqa: E402
from producers.embedded_redis import EmbeddedRedis  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def worker_argv(queue: str, pool: str, concurrency: int) -> list[str]:
    # The flags producers.stack.worker_argv gives omnibind's workers.
    name = f"floor-{queue}-{uuid.uuid4().hex[:6]}@%h"
    return [
        sys.executable, "-m", "celery", "-A", "bench.celery_floor_app", "worker", "-Q", queue, "-n", name,
        "--without-gossip", "--without-mingle", "--prefetch-multiplier", "1", "--loglevel", "WARNING",
        "--pool", pool, "--concurrency", str(concurrency),
    ]  # fmt: skip


def cpu_seconds(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def run(uploads: int, cpu_workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", port=0) as server:
        env = {**os.environ, "OMNIBIND_REDIS_URL": server.url, "OMP_WAIT_POLICY": "PASSIVE"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        pools = {"cpu": ("prefork", cpu_workers), "gpu": ("threads", 16), "index": ("threads", 128)}
        procs = {
            kind: subprocess.Popen(worker_argv(kind, pool, n), cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
            for kind, (pool, n) in pools.items()
        }
        try:
            os.environ["OMNIBIND_REDIS_URL"] = server.url
            from bench.celery_floor_app import DONE_KEY, app

            conn = redis.Redis.from_url(server.url)
            time.sleep(3)  # workers up
            warm = 100

            def send(n: int) -> None:
                for i in range(n):
                    event = {"id": uuid.uuid4().hex, "modality": "text", "text": "a dog running on a beach", "i": i}
                    app.send_task(
                        "floor.preprocess", args=[event], queue="cpu", ignore_result=True,
                        argsrepr="<upload>", kwargsrepr="{}",
                    )  # fmt: skip

            def wait_done(target: int, timeout_s: float = 600) -> None:
                deadline = time.monotonic() + timeout_s
                while int(conn.get(DONE_KEY) or 0) < target:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"only {conn.get(DONE_KEY)} of {target} done")
                    time.sleep(0.01)

            send(warm)
            wait_done(warm)
            tree = {kind: psutil.Process(p.pid) for kind, p in procs.items()}
            tree["redis"] = psutil.Process(server.pid)
            before = {kind: cpu_seconds(p) for kind, p in tree.items()}
            me = psutil.Process()
            producer_before = me.cpu_times().user + me.cpu_times().system
            started = time.perf_counter()
            send(uploads)
            producer_cpu = me.cpu_times().user + me.cpu_times().system - producer_before
            wait_done(warm + uploads)
            wall = time.perf_counter() - started
            after = {kind: cpu_seconds(p) for kind, p in tree.items()}
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
    per_upload = {kind: round(1000 * (after[kind] - before[kind]) / uploads, 3) for kind in after}
    per_upload["producer (send_task)"] = round(1000 * producer_cpu / uploads, 3)
    return {
        "uploads": uploads,
        "uploads_per_s": round(uploads / wall, 1),
        "cpu_ms_per_upload": per_upload,
        "cpu_ms_per_upload_workers_and_redis": round(sum(v for k, v in per_upload.items() if "producer" not in k), 3),
    }


def machine() -> dict[str, Any]:
    import celery
    import kombu

    return {**host_info(), "celery": celery.__version__, "kombu": kombu.__version__, "redis_py": redis.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=3000)
    parser.add_argument("--cpu-workers", type=int, default=0, help="cpu worker processes (0 = one per core)")
    args = parser.parse_args()
    info = machine()
    result = run(args.uploads, args.cpu_workers or os.cpu_count() or 1)
    command = " ".join(["bench/celery_floor.py", *sys.argv[1:]])
    report = {"benchmark": "celery_floor", "machine": info, "command": command, **result}
    lines = [
        "# Celery floor: three no-op hops, omnibind's Celery configuration",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores; load average at start {info['load_avg_at_start']}; "
        f"celery {info['celery']}, kombu {info['kombu']}, redis-py {info['redis_py']}.",
        f"Command: `{report['command']}`",
        "",
        f"{result['uploads']} uploads, {result['uploads_per_s']} uploads/s.",
        "",
        "| process | CPU ms per upload |",
        "|---|---:|",
        *[f"| {kind} | {ms} |" for kind, ms in result["cpu_ms_per_upload"].items()],
        f"| **workers + redis** | **{result['cpu_ms_per_upload_workers_and_redis']}** |",
        "",
    ]
    write_report(RESULTS / f"celery_floor_{dt.date.today().isoformat()}", report, "\n".join(lines))


if __name__ == "__main__":
    main()
