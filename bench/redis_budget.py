"""Redis budget (the "Redis budget" issue): what one upload costs in Redis — memory and
append-only file — at steady state, per key family, and what is still held once every
upload has finished.

    PYTHONPATH=$PWD .venv/bin/python bench/redis_budget.py --per-kind 100

Runs the embedded stack (real redis-server with the embedded config, real Celery workers)
with the tiny random model, then submits uploads one kind at a time — inline texts, small
PNGs and 0.5 s WAVs (tests/support/chaos.py `synthetic_upload`), and real-size 1024×768
JPEGs (a preprocessed image travels as a 3×224×224 uint8 array, ~150 KB) — waiting after each
kind until every upload is terminal and the queues are empty. Per kind it records the growth
of ``used_memory`` (INFO memory) and of the AOF (``aof_current_size``, with automatic
rewrites switched off while measuring), and the bytes of every key family (MEMORY USAGE over
SCAN); a sampler thread records the peak memory while uploads are in flight. At the end the
AOF is rewritten (BGREWRITEAOF) to show what it holds once compacted. Last, a soak phase
runs with the server's own rewrite settings back on and records the largest AOF seen.

Results: bench/results/redis_budget_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from PIL import Image
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.report import write_report
from producers.client import Client
from producers.stack import Stack
from tests.support.chaos import Upload, submit, synthetic_upload
from tests.support.stack import stack_settings

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "omnibind"
# Key families whose bytes must be back to zero once every upload has finished.
TRANSIENT_FAMILIES = ("queue:cpu", "queue:gpu", "queue:index", "unacked", "deliveries", "moderation:join")


def jpeg_upload(index: int, *, run: str) -> Upload:
    """A camera-sized photo stand-in: 1024×768 JPEG (smooth gradients plus noise, ~100 KB)."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:768, 0:1024]
    base = np.stack([(x / 4 + index) % 256, (y / 3) % 256, ((x + y) / 7) % 256], axis=-1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=85)
    upload_id = f"{run}-{index:05d}"
    return Upload(upload_id, data=out.getvalue(), filename=f"{upload_id}.jpg")


def _synthetic_of_kind(kind: int) -> Callable[[int, str], Upload]:
    # synthetic_upload picks its kind from index % 5: 0-2 text, 3 PNG, 4 WAV.
    return lambda i, run: synthetic_upload(i * 5 + kind, run=run)


def corrupt_jpeg_upload(index: int, *, run: str) -> Upload:
    """A JPEG cut short after its header: fails in the CPU stage with a dead letter."""
    upload_id = f"{run}-{index:05d}"
    return Upload(upload_id, data=jpeg_upload(index, run=run).data[:600], filename=f"{upload_id}.jpg")


KINDS: dict[str, Callable[[int, str], Upload]] = {
    "text": _synthetic_of_kind(0),
    "png_64x48": _synthetic_of_kind(3),
    "wav_0.5s": _synthetic_of_kind(4),
    "jpeg_1024x768": lambda i, run: jpeg_upload(i, run=run),
    "corrupt_jpeg": lambda i, run: corrupt_jpeg_upload(i, run=run),
}


def family(key: str) -> str:
    """The key family of `key`: the part after the prefix that names what it holds."""
    if not key.startswith(PREFIX + ":"):
        return "other:" + key.split(".")[0].split(":")[0]
    rest = key[len(PREFIX) + 1 :]
    head, _, tail = rest.partition(":")
    if head in {"cpu", "gpu", "index"}:
        return f"queue:{head}"
    if head.startswith("unacked"):
        return "unacked"
    if head.startswith("_kombu"):
        return "kombu bindings"
    if head in {"moderation", "blocklist", "workers", "metrics", "deletions", "dead"} and tail:
        return f"{head}:{tail.split(':')[0]}"
    return head


def key_families(client: redis.Redis) -> dict[str, dict[str, int]]:
    """family -> {"keys": n, "bytes": MEMORY USAGE summed (exact: SAMPLES 0)}."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    for key in client.scan_iter(count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        used = client.memory_usage(key, samples=0) or 0
        out[family(name)]["keys"] += 1
        out[family(name)]["bytes"] += int(used)
    return dict(sorted(out.items()))


def snapshot(client: redis.Redis) -> dict[str, Any]:
    memory = client.info("memory")
    persistence = client.info("persistence")
    return {
        "used_memory": int(memory["used_memory"]),
        "used_memory_dataset": int(memory.get("used_memory_dataset", 0)),
        "aof_current_size": int(persistence.get("aof_current_size", 0)),
        "aof_base_size": int(persistence.get("aof_base_size", 0)),
        "families": key_families(client),
    }


class Sampler(threading.Thread):
    """Peak used_memory and AOF size, every `interval_s`, while uploads are in flight."""

    def __init__(self, client: redis.Redis, interval_s: float = 0.25) -> None:
        super().__init__(name="redis-sampler", daemon=True)
        self.client = client
        self.interval_s = interval_s
        self.peak_memory = 0
        self.peak_aof = 0
        self.rewrites_seen = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        in_rewrite = False
        while not self._stop_event.wait(self.interval_s):
            memory = self.client.info("memory")
            persistence = self.client.info("persistence")
            self.peak_memory = max(self.peak_memory, int(memory["used_memory"]))
            self.peak_aof = max(self.peak_aof, int(persistence.get("aof_current_size", 0)))
            rewriting = bool(int(persistence.get("aof_rewrite_in_progress", 0)))
            self.rewrites_seen += int(rewriting and not in_rewrite)
            in_rewrite = rewriting

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def wait_idle(client: redis.Redis, timeout_s: float = 120) -> None:
    """Until no message is queued or unacknowledged (acks arrive just after the last result)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = sum(client.llen(f"{PREFIX}:{q}") for q in ("cpu", "gpu", "index"))
        unacked = client.hlen(f"{PREFIX}:unacked")
        if queued == 0 and unacked == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("queues did not drain")


def wait_rewrite(client: redis.Redis, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        persistence = client.info("persistence")
        if not int(persistence["aof_rewrite_in_progress"]) and not int(persistence["aof_rewrite_scheduled"]):
            return
        time.sleep(0.2)
    raise TimeoutError("AOF rewrite did not finish")


def run_uploads(client: Client, uploads: list[Upload], *, rate_per_s: float, timeout_s: float) -> dict[str, int]:
    interval_s = 1.0 / rate_per_s
    next_at = time.monotonic()
    for upload in uploads:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval_s
        submit(client, upload)
    records = client.wait([u.upload_id for u in uploads], timeout_s=timeout_s)
    statuses: dict[str, int] = defaultdict(int)
    for upload in uploads:
        record = records.get(upload.upload_id)
        statuses[record.status.value if record else "unfinished"] += 1
    return dict(statuses)


def family_delta(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, float]:
    names = set(before["families"]) | set(after["families"])
    return {
        name: round(
            (after["families"].get(name, {}).get("bytes", 0) - before["families"].get(name, {}).get("bytes", 0)) / n
        )
        for name in sorted(names)
    }


def measure_kind(rconn: redis.Redis, client: Client, name: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    uploads = [KINDS[name](i, f"budget-{name}") for i in range(n)]
    payload_bytes = sum(len(u.data or b"") or len((u.text or "").encode()) for u in uploads)
    before = snapshot(rconn)
    sampler = Sampler(rconn)
    sampler.start()
    try:
        statuses = run_uploads(client, uploads, rate_per_s=args.rate, timeout_s=args.finish_timeout)
        wait_idle(rconn)
    finally:
        sampler.stop()
    after = snapshot(rconn)
    line = {
        "kind": name,
        "uploads": n,
        "upload_bytes_mean": round(payload_bytes / n),
        "statuses": statuses,
        "memory_per_upload": round((after["used_memory"] - before["used_memory"]) / n),
        "dataset_per_upload": round((after["used_memory_dataset"] - before["used_memory_dataset"]) / n),
        "aof_per_upload": round((after["aof_current_size"] - before["aof_current_size"]) / n),
        "peak_in_flight_memory_over_start": sampler.peak_memory - before["used_memory"],
        "families_per_upload": family_delta(before, after, n),
    }
    print(f"{name}: {line}", flush=True)
    return line


def stream_entry_bytes(rconn: redis.Redis) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stream in ("results", "dead", "decisions"):
        key = f"{PREFIX}:{stream}"
        length = int(rconn.xlen(key))
        used = int(rconn.memory_usage(key, samples=0) or 0)
        out[stream] = {"entries": length, "bytes": used, "bytes_per_entry": round(used / length) if length else 0}
    return out


def held_after(rconn: redis.Redis) -> dict[str, int]:
    """What should be empty once every upload has finished."""
    keys = {f: 0 for f in TRANSIENT_FAMILIES}
    for key in rconn.scan_iter(count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        if family(name) in keys:
            keys[family(name)] += int(rconn.memory_usage(key, samples=0) or 0)
    keys["inflight_entries"] = int(rconn.zcard(f"{PREFIX}:inflight"))
    keys["records_holding_event"] = sum(
        1 for key in rconn.scan_iter(match=f"{PREFIX}:upload:*", count=1000) if rconn.hexists(key, "event")
    )
    return keys


def soak(rconn: redis.Redis, client: Client, args: argparse.Namespace, original: dict[str, str]) -> dict[str, Any]:
    """The mix of `synthetic_upload` plus one JPEG in five, with the server's own rewrite
    settings: the largest AOF seen, against the data it holds."""
    rconn.config_set("auto-aof-rewrite-percentage", original["auto-aof-rewrite-percentage"])
    rconn.config_set("auto-aof-rewrite-min-size", original["auto-aof-rewrite-min-size"])
    uploads = [jpeg_upload(i, run="soak") if i % 5 == 2 else synthetic_upload(i, run="soak") for i in range(args.soak)]
    sampler = Sampler(rconn)
    sampler.start()
    try:
        statuses = run_uploads(client, uploads, rate_per_s=args.rate, timeout_s=args.finish_timeout)
        wait_idle(rconn)
    finally:
        sampler.stop()
    after = snapshot(rconn)
    return {
        "uploads": args.soak,
        "statuses": statuses,
        "rewrite_settings": original,
        "peak_aof": sampler.peak_aof,
        "peak_memory": sampler.peak_memory,
        "rewrites_seen": sampler.rewrites_seen,
        "end_aof_current_size": after["aof_current_size"],
        "end_aof_base_size": after["aof_base_size"],
        "end_used_memory": after["used_memory"],
        "end_dataset": after["used_memory_dataset"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = host_info()
    workdir = Path(tempfile.mkdtemp(prefix="omnibind-redis-budget-"))
    settings = stack_settings(workdir, workdir / "model-cache", worker={"cpu_concurrency": args.cpu_workers})
    (workdir / "logs").mkdir()
    started = time.monotonic()
    with Stack(settings, log_dir=workdir / "logs").start(ready_timeout_s=300) as stack:
        url = stack.redis_url or ""
        connected = settings.model_copy(update={"redis_url": SecretStr(url)})
        rconn = redis.Redis.from_url(url)
        original = {k: str(v) for k, v in rconn.config_get("auto-aof-rewrite-*").items()}
        with Client(connected, source="bench-redis-budget") as client:
            # Warm up (prompt embeddings, metrics families, kombu bindings), then measure
            # with automatic rewrites off so the AOF growth is the writes themselves.
            run_uploads(
                client,
                [KINDS[k](10_000 + i, "warm") for k in KINDS for i in range(3)],
                rate_per_s=args.rate,
                timeout_s=args.finish_timeout,
            )
            wait_idle(rconn)
            rconn.config_set("auto-aof-rewrite-percentage", 0)
            rconn.bgrewriteaof()
            wait_rewrite(rconn)
            start = snapshot(rconn)
            kinds = [measure_kind(rconn, client, name, args.per_kind, args) for name in KINDS]
            before_rewrite = snapshot(rconn)
            rconn.bgrewriteaof()
            wait_rewrite(rconn)
            after_rewrite = snapshot(rconn)
            streams = stream_entry_bytes(rconn)
            held = held_after(rconn)
            soaked = soak(rconn, client, args, original) if args.soak else None
    total = args.per_kind * len(KINDS)
    return {
        "benchmark": "redis_budget",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "command": " ".join(sys.argv),
        "settings": {
            "per_kind": args.per_kind,
            "rate_per_s": args.rate,
            "cpu_workers": args.cpu_workers,
            "moderation": settings.moderation.enabled,
            "embedded_rewrite_settings": original,
        },
        "kinds": kinds,
        "start": start,
        "before_rewrite": before_rewrite,
        "after_rewrite": after_rewrite,
        "aof_per_upload_after_rewrite": round((after_rewrite["aof_current_size"] - start["aof_current_size"]) / total),
        "memory_per_upload_all_kinds": round((before_rewrite["used_memory"] - start["used_memory"]) / total),
        "streams": streams,
        "held_after_finish": held,
        "soak": soaked,
        "wall_s": round(time.monotonic() - started, 1),
        "workdir": str(workdir),
    }


def _kb(n: float) -> str:
    return f"{n / 1024:.2f}"


def markdown(result: dict[str, Any]) -> str:
    kinds = result["kinds"]
    families = sorted({f for k in kinds for f in k["families_per_upload"]})
    lines = [
        "# Redis budget: bytes per upload in Redis (embedded stack, tiny model)",
        "",
        f"- date: {result['date']}; machine: {result['machine']}",
        f"- command: `{result['command']}`",
        f"- settings: {result['settings']}",
        "- AOF growth measured with automatic rewrites off; KB = 1024 bytes",
        "",
        "| kind | uploads | upload size KB | statuses | used_memory KB/upload | AOF KB/upload (before rewrite) "
        "| peak in-flight memory MB |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {k['kind']} | {k['uploads']} | {_kb(k['upload_bytes_mean'])} | {k['statuses']} | "
            f"{_kb(k['memory_per_upload'])} | {_kb(k['aof_per_upload'])} | "
            f"{k['peak_in_flight_memory_over_start'] / 2**20:.1f} |"
            for k in kinds
        ),
        "",
        f"All kinds: used_memory {_kb(result['memory_per_upload_all_kinds'])} KB/upload; AOF after BGREWRITEAOF "
        f"{_kb(result['aof_per_upload_after_rewrite'])} KB/upload (before: "
        f"{result['before_rewrite']['aof_current_size'] / 2**20:.1f} MB, after: "
        f"{result['after_rewrite']['aof_current_size'] / 2**20:.1f} MB for the whole server).",
        "",
        "## Bytes per upload by key family (MEMORY USAGE, after the kind finished)",
        "",
        "| family | " + " | ".join(k["kind"] for k in kinds) + " |",
        "|---|" + "---|" * len(kinds),
        *(
            f"| {f} | " + " | ".join(str(k["families_per_upload"].get(f, 0)) for k in kinds) + " |"
            for f in families
            if any(k["families_per_upload"].get(f, 0) for k in kinds)
        ),
        "",
        "## Streams",
        "",
        "| stream | entries | bytes | bytes/entry |",
        "|---|---|---|---|",
        *(
            f"| {name} | {s['entries']} | {s['bytes']} | {s['bytes_per_entry']} |"
            for name, s in result["streams"].items()
        ),
        "",
        "## Held after every upload finished (should be 0)",
        "",
        "| what | bytes or count |",
        "|---|---|",
        *(f"| {name} | {n} |" for name, n in result["held_after_finish"].items()),
        "",
    ]
    if result["soak"]:
        s = result["soak"]
        lines += [
            f"## Soak: {s['uploads']} mixed uploads (1 in 5 a 1024×768 JPEG), rewrite settings {s['rewrite_settings']}",
            "",
            f"- statuses {s['statuses']}; rewrites seen {s['rewrites_seen']}",
            f"- peak AOF {s['peak_aof'] / 2**20:.1f} MB; end AOF {s['end_aof_current_size'] / 2**20:.1f} MB "
            f"(base {s['end_aof_base_size'] / 2**20:.1f} MB); end used_memory {s['end_used_memory'] / 2**20:.1f} MB; "
            f"peak used_memory {s['peak_memory'] / 2**20:.1f} MB",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=100, help="uploads measured per kind")
    parser.add_argument("--rate", type=float, default=20.0, help="uploads submitted per second")
    parser.add_argument("--soak", type=int, default=0, help="mixed uploads with the server's rewrite settings on")
    parser.add_argument("--cpu-workers", type=int, default=2)
    parser.add_argument("--finish-timeout", type=float, default=900.0)
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()
    result = run(args)
    stem = f"redis_budget{'_' + args.tag if args.tag else ''}_{dt.date.today().isoformat()}"
    write_report(RESULTS / stem, result, markdown(result))


if __name__ == "__main__":
    main()
