"""What a burst of image uploads costs in Redis memory while the GPU stage is stalled, with
and without the gpu-queue bound (``OMNIBIND_BACKPRESSURE__MAX_GPU_QUEUE``).

    PYTHONPATH=$PWD .venv/bin/python bench/redis_burst.py --uploads 300 --limits 0,50

For each limit (0 = unbounded, the behaviour before the bound) it starts the embedded stack
(real redis-server, real Celery workers, tiny random model), SIGSTOPs the gpu worker (a GPU
stage that has fallen behind), submits the burst of 1024×768 JPEGs (each becomes a
3×224×224 array, ~0.2 MB in its message), and samples ``used_memory`` and the queue lengths
until the cpu stage has settled (queues unchanged for `--settle-s`). Then the gpu worker is
resumed and the run ends once every upload is terminal. Recorded per limit: the peak
``used_memory`` and gpu-queue length, the gpu queue's own bytes at the peak (MEMORY USAGE),
uploads still waiting as events, and the drain time after the resume (not a test: a
measurement on a shared machine).

Results: bench/results/redis_burst_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.redis_budget import jpeg_upload
from bench.report import write_report
from producers.client import Client
from producers.stack import Stack
from tests.support.chaos import submit
from tests.support.stack import stack_settings

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "omnibind"


class Sampler(threading.Thread):
    """Peak used_memory, gpu-queue length and the gpu queue's bytes at that peak."""

    def __init__(self, client: redis.Redis, interval_s: float = 0.25) -> None:
        super().__init__(name="redis-sampler", daemon=True)
        self.client = client
        self.interval_s = interval_s
        self.peak_memory = 0
        self.peak_gpu = 0
        self.gpu_bytes_at_peak = 0
        self.last: tuple[int, int, int] = (-1, -1, -1)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.peak_memory = max(self.peak_memory, int(self.client.info("memory")["used_memory"]))
            cpu, gpu = (int(self.client.llen(f"{PREFIX}:{q}")) for q in ("cpu", "gpu"))
            if gpu > self.peak_gpu:
                self.peak_gpu = gpu
                self.gpu_bytes_at_peak = int(self.client.memory_usage(f"{PREFIX}:gpu", samples=0) or 0)
            self.last = (cpu, gpu, int(self.client.hlen(f"{PREFIX}:unacked")))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def wait_settled(sampler: Sampler, settle_s: float, timeout_s: float) -> float:
    """Seconds until the queue lengths stayed unchanged for `settle_s`."""
    started = time.monotonic()
    seen, since = sampler.last, time.monotonic()
    while time.monotonic() - started < timeout_s:
        time.sleep(0.25)
        if sampler.last != seen:
            seen, since = sampler.last, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            return round(time.monotonic() - started, 1)
    raise TimeoutError("the cpu stage did not settle")


def run_limit(limit: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    root = workdir / f"limit-{limit}"
    settings = stack_settings(
        root,
        workdir / "model-cache",
        worker={"cpu_concurrency": args.cpu_workers},
        backpressure={"max_gpu_queue": limit},
    )
    (root / "logs").mkdir(parents=True)
    uploads = [jpeg_upload(i, run=f"burst{limit}") for i in range(args.uploads)]
    with Stack(settings, log_dir=root / "logs").start(ready_timeout_s=300) as stack:
        url = stack.redis_url or ""
        rconn = redis.Redis.from_url(url)
        base_memory = int(rconn.info("memory")["used_memory"])
        gpu = next(w for w in stack.workers if w.kind == "gpu")
        with Client(settings.model_copy(update={"redis_url": SecretStr(url)}), source="bench-burst") as client:
            sampler = Sampler(rconn)
            sampler.start()
            stack.kill(gpu, signal.SIGSTOP)
            submitted_at = time.monotonic()
            for upload in uploads:
                submit(client, upload)
            settled_s = wait_settled(sampler, args.settle_s, args.timeout_s)
            cpu_waiting, gpu_waiting, held = sampler.last
            settled_memory = int(rconn.info("memory")["used_memory"])
            stack.kill(gpu, signal.SIGCONT)
            resumed_at = time.monotonic()
            records = client.wait([u.upload_id for u in uploads], timeout_s=args.timeout_s)
            drained_s = round(time.monotonic() - resumed_at, 1)
            sampler.stop()
            statuses: dict[str, int] = {}
            for upload in uploads:
                record = records.get(upload.upload_id)
                key = record.status.value if record else "unfinished"
                statuses[key] = statuses.get(key, 0) + 1
            dead = client.dead_letters.length()
    return {
        "max_gpu_queue": limit,
        "uploads": args.uploads,
        "base_used_memory": base_memory,
        "peak_used_memory": sampler.peak_memory,
        "peak_growth_mb": round((sampler.peak_memory - base_memory) / 2**20, 1),
        "settled_used_memory": settled_memory,
        "peak_gpu_queue": sampler.peak_gpu,
        "gpu_queue_bytes_at_peak": sampler.gpu_bytes_at_peak,
        "bytes_per_gpu_message": round(sampler.gpu_bytes_at_peak / max(1, sampler.peak_gpu)),
        "settled": {"after_s": settled_s, "cpu_queue": cpu_waiting, "gpu_queue": gpu_waiting, "unacked": held},
        "submit_to_settle_s": round(resumed_at - submitted_at, 1),
        "drain_after_resume_s": drained_s,
        "statuses": statuses,
        "dead_letters": dead,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Redis memory of a burst with the GPU stage stalled ({result['date']})",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`.",
        "",
        "| max_gpu_queue | uploads | peak gpu queue | gpu queue bytes at peak | per message | peak used_memory growth "
        "| at settle: cpu / gpu queue / held | drain after resume | outcome |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lines.append(
            f"| {run['max_gpu_queue'] or 'unbounded'} | {run['uploads']} | {run['peak_gpu_queue']} "
            f"| {run['gpu_queue_bytes_at_peak'] / 2**20:.1f} MB | {run['bytes_per_gpu_message'] / 1024:.0f} KB "
            f"| {run['peak_growth_mb']} MB "
            f"| {run['settled']['cpu_queue']} / {run['settled']['gpu_queue']} / {run['settled']['unacked']} "
            f"| {run['drain_after_resume_s']} s | {run['statuses']}, dead letters {run['dead_letters']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--limits", default="0,50", help="max_gpu_queue values to run, comma-separated (0: none)")
    parser.add_argument("--cpu-workers", type=int, default=2)
    parser.add_argument("--settle-s", type=float, default=5.0, help="queues unchanged this long = settled")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="omnibind-redis-burst-"))
    started = time.monotonic()
    runs = [run_limit(int(limit), args, workdir) for limit in args.limits.split(",")]
    result = {
        "benchmark": "redis_burst",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": host_info(),
        "command": " ".join(sys.argv),
        "runs": runs,
        "wall_s": round(time.monotonic() - started, 1),
        "workdir": str(workdir),
    }
    stem = f"redis_burst{'_' + args.tag if args.tag else ''}_{dt.date.today().isoformat()}"
    write_report(RESULTS / stem, result, markdown(result))


if __name__ == "__main__":
    main()
