"""The index worker recycles itself past OMNIBIND_INDEX__RECYCLE_RSS_MB: a warm shutdown (exit
status 0, not a kill), after which `omnibind up`'s supervision starts a fresh one that indexes."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack
from tests.support.stack import stack_settings
from tests.support.waiting import wait_until
from workers.memory_guard import start_recycling

RECYCLE_MARK = "over OMNIBIND_INDEX__RECYCLE_RSS_MB: recycling"


def wait_exit(stack: Stack, timeout_s: float = 120.0) -> int:
    [worker] = [w for w in stack.workers if w.kind == "index"]
    wait_until(
        lambda: worker.process.poll() is not None,
        timeout_s=timeout_s,
        what="the index worker to recycle itself",
        poll_s=0.2,
    )
    return worker.process.returncode


def test_an_index_worker_over_its_bound_shuts_down_warm_and_is_replaced(tmp_path: Path, model_cache: Path) -> None:
    (tmp_path / "logs").mkdir()
    settings = stack_settings(tmp_path, model_cache)
    with Stack(settings, kinds=("cpu", "gpu"), log_dir=tmp_path / "logs") as stack:
        # Any index worker is over 1 MB: it recycles right after it is ready.
        stack.spawn("index", env={"OMNIBIND_INDEX__RECYCLE_RSS_MB": "1"})
        assert wait_exit(stack) == 0  # Celery's warm shutdown, not SIGKILL
        log_text = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("index-*.log"))
        assert RECYCLE_MARK in log_text

        # The supervisor replaces it (same kind, same environment): here one without a bound.
        [old] = [w for w in stack.workers if w.kind == "index"]
        old.env.pop("OMNIBIND_INDEX__RECYCLE_RSS_MB")
        [fresh] = stack.restart_dead()
        assert fresh.kind == "index" and fresh.process.poll() is None
        with Client(settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")}), source="test") as c:
            upload_id = c.submit_text("a dog on a beach")
            assert c.wait([upload_id], timeout_s=120)[upload_id].status.value == "indexed"


def test_no_bound_no_recycling() -> None:
    assert start_recycling(0) is None
