"""Resident memory of the processes that run no model: an idle cpu worker (its prefork pool
processes above all: one GPU needs ~28 of them), the HTTP API (`omnibind serve`) and the
ingest bridge (`omnibind bridge`), each started as in production against an embedded
redis-server, measured once idle, with whether libtorch is mapped into it.

    python bench/process_rss.py [--code-root DIR] [--label NAME] [--settle-s 5]

`--code-root` runs the measured processes from another checkout (say `git archive <commit>`
unpacked into a folder) with this interpreter, to compare before and after a change; the
harness itself (redis-server, readiness checks) always runs from this tree. Results:
bench/results/process_rss_<label>_<date>.{json,md}. RSS counts pages a pool process shares
with its parent after fork; USS is what the process alone holds (freed when it exits), PSS
its fair share of the shared pages: the sum of PSS over processes is the memory they use.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from producers.embedded_redis import EmbeddedRedis, free_port
from producers.stack import settings_env, worker_argv
from shared.config import Settings
from shared.heartbeat import live_workers
from shared.redis_client import redis_client

RESULTS = Path(__file__).resolve().parent / "results"
MB = 2**20


def torch_mapped(pid: int) -> bool:
    """Whether libtorch is mapped into process `pid` (i.e. torch was imported there)."""
    with contextlib.suppress(OSError):
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    return False


def memory_of(process: psutil.Process, role: str) -> dict[str, Any]:
    info = process.memory_full_info()
    return {
        "role": role,
        "pid": process.pid,
        "rss_mb": round(info.rss / MB, 1),
        "uss_mb": round(info.uss / MB, 1),
        "pss_mb": round(getattr(info, "pss", 0) / MB, 1),
        "torch": torch_mapped(process.pid),
    }


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")
        time.sleep(0.3)


def heartbeat_of(url: str, prefix: str, kind: str, pid: int) -> Callable[[], bool]:
    def check() -> bool:
        client = redis_client(url, decode_responses=True)
        try:
            return any(int(str(beat.get("pid"))) == pid for beat in live_workers(client, prefix, kind))
        finally:
            client.close()

    return check


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return check


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[psutil.Process]:
    with log.open("wb") as output:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    try:
        yield psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(code_root: Path, settle_s: float, workdir: Path) -> list[dict[str, Any]]:
    settings = Settings(
        data_dir=workdir / "data",
        model={"name": "tiny", "cache_dir": workdir / "cache"},  # type: ignore[arg-type]
        redis={"embedded_port": 0},  # type: ignore[arg-type]
        worker={"cpu_concurrency": 2},  # type: ignore[arg-type]
    )
    rows: list[dict[str, Any]] = []
    with EmbeddedRedis.from_settings(settings) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
        env.update(settings_env(settings))
        env.update(OMNIBIND_REDIS_URL=server.url, PYTHONPATH=str(code_root), PYTHONUNBUFFERED="1")
        prefix = settings.queue_prefix
        cli = [sys.executable, "-m", "producers.cli"]
        port = free_port()
        measured = [
            ("cpu worker", worker_argv("cpu", settings), {"OMNIBIND_WORKER__KIND": "cpu"}, "cpu"),
            ("HTTP API (omnibind serve)", [*cli, "serve", "--port", str(port)], {}, None),
            ("bridge (omnibind bridge)", [*cli, "bridge", "--stream", "--no-minio"], {}, "bridge"),
        ]
        for name, argv, extra, kind in measured:
            log = workdir / f"{name.split()[0]}.log"
            with running(argv, {**env, **extra}, code_root, log) as process:
                if kind is None:
                    wait_for(answers(f"http://127.0.0.1:{port}/healthz"), name)
                else:
                    wait_for(heartbeat_of(server.url, prefix, kind, process.pid), name)
                time.sleep(settle_s)
                rows.append({"process": name, **memory_of(process, "main")})
                for child in process.children(recursive=True):
                    rows.append({"process": name, **memory_of(child, "pool" if kind == "cpu" else "child")})
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Process memory, {report['label']} ({report['date']})",
        "",
        f"Command: `{report['command']}`; code measured: `{report['code_root']}`.",
        f"Machine: {json.dumps(report['host'])}",
        "",
        "| process | role | pid | RSS MB | USS MB | PSS MB | libtorch mapped |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['process']} | {row['role']} | {row['pid']} | {row['rss_mb']} | {row['uss_mb']} "
            f"| {row['pss_mb']} | {'yes' if row['torch'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code-root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--label", default="current")
    parser.add_argument("--settle-s", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnibind-rss-") as tmp:
        rows = measure(args.code_root.resolve(), args.settle_s, Path(tmp))
    today = dt.date.today().isoformat()
    report = {
        "label": args.label,
        "date": today,
        "command": " ".join(["python", *sys.argv]),
        "code_root": str(args.code_root),
        "host": host_info(),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"process_rss_{args.label}_{today}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
