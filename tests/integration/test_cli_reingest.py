"""The `omnibind` command line against a running embedded stack (real workers, tiny model):
ingesting the same folder again duplicates nothing, `delete` removes a record, `watch`
reports each upload's end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.vectors.records import ALL_TENANTS, SearchFilters
from tests.support.stack import RunningStack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def omnibind_json(running: RunningStack, *args: str) -> list[dict[str, Any]]:
    done = running.cli(*args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def by_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {Path(doc["path"]).name: doc for doc in docs}


def test_reingest_duplicates_nothing_delete_removes_and_watch_reports_each_end(
    start_stack: Callable[..., RunningStack], tmp_path: Path
) -> None:
    running = start_stack()
    client = running.client
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in {"a.txt": "a lighthouse at dusk", "b.txt": "a red bicycle"}.items():
        (folder / name).write_text(text, encoding="utf-8")
    everything = SearchFilters(scope=ALL_TENANTS)

    first = by_name(omnibind_json(running, "ingest", str(folder), "--wait"))
    assert {n: (d["submitted"], d["outcome"]) for n, d in first.items()} == {
        "a.txt": ("submitted", "indexed"),
        "b.txt": ("submitted", "indexed"),
    }
    again = by_name(omnibind_json(running, "ingest", str(folder), "--wait"))
    assert {n: (d["id"], d["submitted"], d["outcome"]) for n, d in again.items()} == {
        n: (d["id"], "exists", "indexed") for n, d in first.items()
    }
    assert client.vectors.count(everything) == 2
    assert {client.status(d["id"]).run for d in first.values()} == {1}  # type: ignore[union-attr]

    gone = first["a.txt"]["id"]
    assert omnibind_json(running, "delete", gone) == [{"id": gone, "outcome": "requested"}]
    wait_until(lambda: client.vectors.get(gone) is None, timeout_s=120, what="the deleted record to go", poll_s=0.3)
    back = by_name(omnibind_json(running, "ingest", str(folder)))
    assert (back["a.txt"]["outcome"], back["b.txt"]["outcome"]) == ("submitted", "exists")

    watched = tmp_path / "watched"
    watched.mkdir()
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    with out.open("w") as sink, err.open("w") as errors:
        watch = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "watch", str(watched), "--interval", "0.2", "--json"],
            env=running.cli_env(),
            cwd=ROOT,
            stdout=sink,
            stderr=errors,
        )
    try:
        wait_until(
            lambda: "watching" in err.read_text() or watch.poll() is not None,
            timeout_s=60,
            what="the watcher to start",
            poll_s=0.3,
        )
        assert watch.poll() is None, err.read_text()
        (watched / "new.txt").write_text("a kettle whistling", encoding="utf-8")
        (watched / "empty.txt").write_bytes(b"")
        wait_until(lambda: len(out.read_text().splitlines()) >= 4, timeout_s=180, what="four outcome lines", poll_s=0.3)
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=60)
    outcomes = [(Path(d["path"]).name, d["outcome"]) for d in map(json.loads, out.read_text().splitlines())]
    expected = [("empty.txt", "failed"), ("empty.txt", "submitted"), ("new.txt", "indexed"), ("new.txt", "submitted")]
    assert sorted(outcomes) == expected, out.read_text()
