"""End-to-end pipeline benchmark on the embedded stack (issue #6).

N uploads (configurable mix) go through real processes — embedded redis-server, cpu/gpu/index
Celery workers — twice in the same run: with micro-batching (gpu max_batch = --max-batch) and
without (max_batch = 1). For each run it reports uploads/s, upload-to-indexed latency
percentiles, per-stage times (from the status timestamps), the GPU batch-size histogram
(from the workers' heartbeats), peak RSS per worker kind, CPU seconds per upload per
process kind, and Redis memory. A light-load phase (one upload at a time) gives the latency
floor. Results: bench/results/pipeline_throughput_<model>_<device>_<date>.{json,md}.

    python bench/pipeline_throughput.py --uploads 300 --model tiny
    python bench/pipeline_throughput.py --uploads 2000 --model huge --device cuda --max-batch 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.machine import host_info
from bench.report import write_report
from producers.client import Client
from producers.stack import Stack
from shared.config import Settings
from shared.heartbeat import live_workers
from shared.status import StatusRecord

RESULTS = Path(__file__).resolve().parent / "results"
CAPTIONS = ["a dog running on a beach", "a red car in the rain", "people laughing at a party", "a cat asleep on a sofa"]


# -- inputs -----------------------------------------------------------------------------------


def make_uploads(folder: Path, n: int, mix: dict[str, int]) -> list[Path]:
    """Deterministic synthetic uploads: 640x480 JPEG photos-like noise, short captions,
    2 s 16 kHz WAV tones."""
    rng = np.random.default_rng(0)
    kinds = [k for k, weight in mix.items() for _ in range(weight)]
    paths = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "image":
            pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            path = folder / f"img-{i:05d}.jpg"
            Image.fromarray(pixels).save(path, quality=85)
        elif kind == "text":
            path = folder / f"txt-{i:05d}.txt"
            path.write_text(f"{CAPTIONS[i % len(CAPTIONS)]} #{i}", encoding="utf-8")
        else:
            path = folder / f"aud-{i:05d}.wav"
            t = np.arange(32_000) / 16_000
            pcm = (0.3 * np.sin(2 * np.pi * (220 + i) * t) * 32767).astype("<i2")
            with wave.open(str(path), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(16_000)
                out.writeframes(pcm.tobytes())
        paths.append(path)
    return paths


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class ProcessSampler:
    """Samples RSS and CPU time of each worker kind's process tree (and redis) while running."""

    stack: Stack
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def trees(self) -> dict[str, list[psutil.Process]]:
        trees: dict[str, list[psutil.Process]] = {}
        for worker in self.stack.workers:
            try:
                root = psutil.Process(worker.process.pid)
                trees.setdefault(worker.kind, []).extend([root, *root.children(recursive=True)])
            except psutil.NoSuchProcess:
                continue
        if self.stack.redis is not None and self.stack.redis.pid:
            trees["redis"] = [psutil.Process(self.stack.redis.pid)]
        return trees

    def cpu_seconds(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for kind, procs in self.trees().items():
            for proc in procs:
                try:
                    times = proc.cpu_times()
                    totals[kind] = totals.get(kind, 0.0) + times.user + times.system
                except psutil.NoSuchProcess:
                    continue
        return totals

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for kind, procs in self.trees().items():
                rss = 0.0
                for proc in procs:
                    try:
                        rss += proc.memory_info().rss / 2**20
                    except psutil.NoSuchProcess:
                        continue
                self.peak_rss_mb[kind] = max(self.peak_rss_mb.get(kind, 0.0), rss)

    def __enter__(self) -> ProcessSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "mean": statistics.fmean(ordered)}


def stage_times_ms(records: list[StatusRecord]) -> dict[str, dict[str, float]]:
    """Per-stage durations from the status timestamps (queue wait included)."""
    pairs = {
        "queued->preprocessed": ("queued", "preprocessed"),
        "preprocessed->embedded": ("preprocessed", "embedded"),
        "embedded->indexed": ("embedded", "indexed"),
        "queued->indexed": ("queued", "indexed"),
    }
    out = {}
    for name, (start, end) in pairs.items():
        spans = [
            (r.timestamps[end] - r.timestamps[start]).total_seconds() * 1000
            for r in records
            if start in r.timestamps and end in r.timestamps
        ]
        out[name] = {k: round(v, 2) for k, v in percentiles(spans).items()}
    return out


def batch_stats(client: Client) -> dict[str, Any]:
    beats = live_workers(client.redis, client.settings.queue_prefix)
    return {
        "gpu": next((b["gpu"] for b in beats if "gpu" in b), {}),
        "index": next((b["index"] for b in beats if "index" in b), {}),
    }


# -- one run -------------------------------------------------------------------------------------


def run_once(base: Settings, files: list[Path], *, max_batch: int, light: int, timeout_s: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="omnibind-bench-"))
    settings = base.model_copy(
        update={
            "data_dir": workdir,
            "gpu": base.gpu.model_copy(update={"max_batch": max_batch}),
            "redis": base.redis.model_copy(update={"embedded_port": 0}),
        }
    )
    (workdir / "logs").mkdir()
    with Stack(settings, log_dir=workdir / "logs") as stack:
        connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
        with Client(connected, source="bench") as client, ProcessSampler(stack) as sampler:
            light_latencies = []
            for path in files[:light]:  # light load: one upload at a time
                start = time.perf_counter()
                upload_id = client.submit(path)
                client.wait([upload_id], timeout_s=timeout_s)
                light_latencies.append((time.perf_counter() - start) * 1000)
            cpu_before = sampler.cpu_seconds()
            start = time.perf_counter()
            ids = [client.submit(path) for path in files]
            submit_s = time.perf_counter() - start
            done = client.wait(ids, timeout_s=timeout_s)
            elapsed_s = time.perf_counter() - start
            cpu_after = sampler.cpu_seconds()
            time.sleep(6)  # one heartbeat interval: batch statistics published
            batches = batch_stats(client)
            redis_info = client.redis.info("memory")
        records = list(done.values())
    indexed = sum(1 for r in records if r.status.value == "indexed")
    return {
        "max_batch": max_batch,
        "uploads": len(files),
        "indexed": indexed,
        "failed": sum(1 for r in records if r.status.value == "failed"),
        "unfinished": len(files) - len(records),
        "elapsed_s": round(elapsed_s, 3),
        "uploads_per_s": round(indexed / elapsed_s, 2),
        "submit_ms_per_upload": round(submit_s / len(files) * 1000, 3),
        "latency_ms": stage_times_ms(records),
        "light_load_latency_ms": {k: round(v, 2) for k, v in percentiles(light_latencies).items()},
        "cpu_ms_per_upload": {
            kind: round((cpu_after.get(kind, 0.0) - cpu_before.get(kind, 0.0)) / max(indexed, 1) * 1000, 3)
            for kind in cpu_after
        },
        "peak_rss_mb": {k: round(v, 1) for k, v in sampler.peak_rss_mb.items()},
        "redis_used_memory_peak_mb": round(int(redis_info["used_memory_peak"]) / 2**20, 2),
        "batches": batches,
    }


# -- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import celery
    import torch

    return {
        **host_info(),
        "torch": torch.__version__,
        "celery": celery.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Pipeline throughput — {result['settings']['model']} on {result['machine']['device']}",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['machine']['ram_gb']} GB; "
        f"load average at start {result['machine']['load_avg_at_start']}.",
        f"Command: `{result['command']}`",
        "",
        "| run | uploads/s | p50 / p95 / p99 queued->indexed (ms) | light-load p50 (ms) | batches (gpu) "
        "| CPU ms/upload |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lat = run["latency_ms"].get("queued->indexed", {})
        cpu = ", ".join(f"{k} {v}" for k, v in run["cpu_ms_per_upload"].items())
        hist = run["batches"]["gpu"].get("size_histogram", {})
        lines.append(
            f"| max_batch={run['max_batch']} | {run['uploads_per_s']} | {lat.get('p50')} / {lat.get('p95')} / "
            f"{lat.get('p99')} | {run['light_load_latency_ms'].get('p50')} | {hist} | {cpu} |"
        )
    lines += ["", f"batching_speedup: **{result['batching_speedup']}**", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--mix", default="image=1,text=1,audio=1", help="weights per modality")
    parser.add_argument("--model", choices=["tiny", "huge"], default="tiny")
    parser.add_argument("--checkpoint", type=Path, default=None, help="local checkpoint (huge)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--cpu-workers", type=int, default=0, help="cpu worker processes (0 = one per core)")
    parser.add_argument("--light", type=int, default=20, help="uploads sent one at a time first")
    parser.add_argument("--no-compare", action="store_true", help="skip the max_batch=1 run")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()

    mix = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    base = Settings(
        model={"name": args.model, "checkpoint": args.checkpoint, "device": args.device, "dtype": args.dtype},
        gpu={"max_wait_ms": args.max_wait_ms},
        worker={"cpu_concurrency": args.cpu_workers},
        log_level="WARNING",
    )
    with tempfile.TemporaryDirectory(prefix="omnibind-bench-inputs-") as folder:
        files = make_uploads(Path(folder), args.uploads, mix)
        runs = [run_once(base, files, max_batch=args.max_batch, light=args.light, timeout_s=args.timeout)]
        if not args.no_compare:
            runs.append(run_once(base, files, max_batch=1, light=args.light, timeout_s=args.timeout))
    speedup = round(runs[0]["uploads_per_s"] / runs[1]["uploads_per_s"], 3) if len(runs) > 1 else None
    result = {
        "command": " ".join(sys.argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {**vars(args), "checkpoint": str(args.checkpoint) if args.checkpoint else None, "mix": mix},
        "runs": runs,
        "batching_speedup": speedup,
        "device": machine()["device"],
    }
    stem = f"pipeline_throughput_{args.model}_{result['device'].replace(' ', '-')}_{dt.date.today().isoformat()}"
    if set(mix) != {"image", "text", "audio"}:  # a one-modality run does not replace the mixed one
        stem += "_" + "-".join(sorted(mix))
    write_report(RESULTS / stem, result, markdown(result))


if __name__ == "__main__":
    main()
