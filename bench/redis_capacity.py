"""Capacity of one Redis primary (the "Beyond one machine" issue): Redis commands, server time
and network bytes per upload by modality, and the uploads/s that one primary can carry,
stated against Redis's own ceiling on this machine (redis-benchmark).

    PYTHONPATH=$PWD .venv/bin/python bench/redis_capacity.py --per-kind 60

Runs the embedded stack (real redis-server, real cpu/gpu/index Celery workers, tiny model,
embedded stores) and, per modality (tests/support/chaos.py `synthetic_upload` texts, 64×48
PNGs, 0.5 s WAVs, and 1024×768 JPEGs), submits uploads through `producers.client.Client`,
waits until every one is indexed and the queues are empty, and takes the deltas of
``INFO commandstats`` (calls and microseconds per command) and ``INFO stats``
(``total_net_input_bytes``/``total_net_output_bytes``). What the idle stack sends anyway
(every consumer's BRPOP timeout, heartbeats, metrics flushes, sweeps) is measured first over
`--idle-s` seconds and subtracted in proportion to each phase's length.

Then ``redis-benchmark`` (Debian's redis-tools; 50 clients, no pipelining, the commands
omnibind uses most) measures what this server does when it does nothing else: ops/s, and the CPU
time of Redis' main thread per operation (``INFO cpu`` ``used_cpu_*_main_thread``: command
execution plus reading, parsing and replying). Redis executes commands on that one thread, so
a primary saturates when it is busy all the time: an upload's main-thread CPU (measured the
same way during the run, idle traffic subtracted) gives ``1e6 / cpu_usec`` uploads/s at most,
and ``cpu_usec / benchmark_cpu_usec_per_op`` says how many redis-benchmark operations one
upload weighs.

Results: bench/results/redis_capacity_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.redis_budget import KINDS, run_uploads, wait_idle
from bench.report import write_report
from producers.client import Client
from producers.stack import Stack
from tests.support.stack import stack_settings

RESULTS = Path(__file__).resolve().parent / "results"
MEASURED = ("text", "png_64x48", "wav_0.5s", "jpeg_1024x768")
BENCH_COMMANDS = "set,get,lpush,rpop,hset,zadd"


def main_thread_cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys_main_thread"]) + float(cpu["used_cpu_user_main_thread"])


def counters(client: redis.Redis) -> dict[str, Any]:
    stats = client.info("stats")
    commands = client.info("commandstats")
    return {
        "t": time.monotonic(),
        "cpu": main_thread_cpu_s(client),
        "in": int(stats["total_net_input_bytes"]),
        "out": int(stats["total_net_output_bytes"]),
        "calls": Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commands.items()}),
        "usec": Counter({k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in commands.items()}),
    }


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls, usec = Counter(after["calls"]), Counter(after["usec"])
    calls.subtract(before["calls"])
    usec.subtract(before["usec"])
    calls["info"] -= 3  # our own INFO calls per snapshot
    return {
        "s": after["t"] - before["t"],
        "cpu": after["cpu"] - before["cpu"],
        "in": after["in"] - before["in"],
        "out": after["out"] - before["out"],
        "calls": calls,
        "usec": usec,
    }


def minus_idle(phase: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    share = phase["s"] / idle["s"]
    calls = Counter({k: v - idle["calls"].get(k, 0) * share for k, v in phase["calls"].items()})
    usec = Counter({k: v - idle["usec"].get(k, 0) * share for k, v in phase["usec"].items()})
    return {
        "s": phase["s"],
        "cpu": phase["cpu"] - idle["cpu"] * share,
        "in": phase["in"] - idle["in"] * share,
        "out": phase["out"] - idle["out"] * share,
        "calls": calls,
        "usec": usec,
    }


def redis_benchmark(port: int, requests: int) -> dict[str, Any]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"error": "redis-benchmark not installed (Debian package redis-tools)"}
    probe = redis.Redis("127.0.0.1", port)
    probe.config_resetstat()
    cpu_before = main_thread_cpu_s(probe)
    started = time.monotonic()
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", "50", "-t", BENCH_COMMANDS, "--csv"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapsed = time.monotonic() - started
    cpu_s = main_thread_cpu_s(probe) - cpu_before
    per_test = {}
    for line in out.splitlines()[1:]:
        fields = [f.strip('"') for f in line.split(",")]
        per_test[fields[0]] = float(fields[1])
    stats = probe.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    usec = sum(int(v["usec"]) for k, v in stats.items() if k != "cmdstat_info")
    ops = sum(per_test.values()) / len(per_test)
    probe.flushall()
    return {
        "requests_per_test": requests,
        "clients": 50,
        "ops_per_s_by_test": per_test,
        "ops_per_s_mean": round(ops),
        "server_usec_per_call": round(usec / calls, 3),
        "main_thread_cpu_usec_per_call": round(cpu_s * 1e6 / calls, 3),
        "main_thread_busy_share": round(cpu_s / elapsed, 2),
        "elapsed_s": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=60)
    parser.add_argument("--rate", type=float, default=10.0, help="submissions per second")
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--bench-requests", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="omnibind-capacity-") as tmp:
        root = Path(tmp)
        # Without transcripts: a 0.5 s WAV whose transcript arrived before its embedding stayed
        # at 'embedded' (speech join, 31 of 60 in one run); the speech stage is not measured here.
        settings = stack_settings(root, root / "model-cache", worker={"sweep_interval_s": 5}, speech={"enabled": False})
        (root / "logs").mkdir()
        with Stack(settings, log_dir=root / "logs").start(ready_timeout_s=300) as stack:
            assert stack.redis is not None
            port = stack.redis.port
            rconn = redis.Redis("127.0.0.1", port, decode_responses=True)
            client = Client(settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")}), source="bench")
            workers = len(stack.workers)
            run_uploads(client, [KINDS["text"](i, "warm") for i in range(5)], rate_per_s=5, timeout_s=120)
            wait_idle(rconn)
            before = counters(rconn)
            time.sleep(args.idle_s)
            idle = delta(before, counters(rconn))
            phases: dict[str, Any] = {}
            for name in MEASURED:
                uploads = [KINDS[name](i, f"cap-{name}") for i in range(args.per_kind)]
                before = counters(rconn)
                statuses = run_uploads(client, uploads, rate_per_s=args.rate, timeout_s=300)
                wait_idle(rconn)
                phase = minus_idle(delta(before, counters(rconn)), idle)
                n = args.per_kind
                calls = {k: round(v / n, 2) for k, v in sorted(phase["calls"].items()) if v / n >= 0.05}
                usec = sum(v for v in phase["usec"].values()) / n
                phases[name] = {
                    "uploads": n,
                    "statuses": statuses,
                    "commands_per_upload": round(sum(phase["calls"].values()) / n, 1),
                    "server_usec_per_upload": round(usec, 1),
                    "main_thread_cpu_usec_per_upload": round(phase["cpu"] * 1e6 / n, 1),
                    "net_in_bytes_per_upload": round(phase["in"] / n),
                    "net_out_bytes_per_upload": round(phase["out"] / n),
                    "commands": calls,
                }
                print(name, phases[name], flush=True)
            client.close()
            bench = redis_benchmark(port, args.bench_requests)

    idle_rate = {
        "commands_per_s": round(sum(idle["calls"].values()) / idle["s"], 1),
        "workers": workers,
        "by_command_per_s": {
            k: round(v / idle["s"], 2) for k, v in sorted(idle["calls"].items()) if v / idle["s"] >= 0.05
        },
    }
    if "main_thread_cpu_usec_per_call" in bench:
        for phase in phases.values():
            # Redis executes commands on one thread: a primary saturates when that thread is busy
            # all the time, at redis-benchmark's ops/s for its commands.
            cost = phase["main_thread_cpu_usec_per_upload"]
            phase["uploads_per_s_one_primary"] = round(1e6 / cost)
            phase["benchmark_ops_per_upload"] = round(cost / bench["main_thread_cpu_usec_per_call"], 1)
            phase["share_of_ceiling_per_1000_uploads_s"] = round(1000 * cost / 1e6, 2)
    report = {
        "date": dt.date.today().isoformat(),
        "host": host_info(),
        "idle": idle_rate,
        "phases": phases,
        "redis_benchmark": bench,
    }
    lines = [
        f"# One Redis primary's capacity — {report['date']}",
        "",
        f"Host: {report['host']}. Embedded stack, tiny model, {workers} workers; {args.per_kind} uploads per "
        f"modality at {args.rate:g}/s; idle traffic ({idle_rate['commands_per_s']} commands/s) subtracted.",
        "",
        "| modality | commands / upload (incl. inside scripts) | command µs / upload (commandstats) "
        "| Redis main-thread CPU µs / upload | net in B / upload | net out B / upload "
        "| = redis-benchmark ops | uploads/s one primary (main thread 100 %) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {p['commands_per_upload']} | {p['server_usec_per_upload']} | "
            f"{p['main_thread_cpu_usec_per_upload']} | {p['net_in_bytes_per_upload']} | "
            f"{p['net_out_bytes_per_upload']} | {p.get('benchmark_ops_per_upload', '-')} | "
            f"{p.get('uploads_per_s_one_primary', '-')} |"
            for name, p in phases.items()
        ),
        "",
        f"redis-benchmark (50 clients, no pipelining, {BENCH_COMMANDS}): {bench}",
        "",
        "Commands per upload:",
        "",
        *(f"- {name}: {p['commands']}" for name, p in phases.items()),
        "",
        f"Idle stack, per second: {idle_rate['by_command_per_s']}",
        "",
    ]
    write_report(args.out / f"redis_capacity_{report['date']}", report, "\n".join(lines))


if __name__ == "__main__":
    main()
