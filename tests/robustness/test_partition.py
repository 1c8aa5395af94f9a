"""Workers on other hosts: Redis and the embedded stores on one (simulated) host, a cpu, a gpu
and an index worker on each of two others (network namespaces, tests/support/netns.py).
Mid-run one worker host is cut off for longer than the visibility timeout, then rejoined: the
messages it held are delivered to the other host, nothing is done twice where it matters (one
vector record per upload, one result event per run), and the rejoined host takes work again."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from pydantic import SecretStr

from producers.client import Client
from producers.embedded_redis import free_port
from producers.stack import Stack, WorkerProcess
from shared.queue import make_celery
from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import Submitter, account, supervise_until_finished, synthetic_upload
from tests.support.netns import Host, Network, start_redis_on
from tests.support.stack import stack_settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

UPLOADS = 150
AFTER_HEAL = 30
RATE_PER_S = 10
PARTITION_S = FAST_RECOVERY["visibility_timeout_s"] + 8


@pytest.fixture
def multi_host(
    tmp_path: Path, model_cache: Path, simulated_network: Network
) -> Iterator[tuple[Stack, Client, list[Host]]]:
    port = free_port()
    redis_process = start_redis_on(simulated_network.gateway, tmp_path / "redis", port)
    url = f"redis://{simulated_network.gateway}:{port}/0"
    settings = stack_settings(
        tmp_path,
        model_cache,
        redis_url=SecretStr(url),
        worker={**FAST_RECOVERY, "max_deliveries": 8},
        speech={"enabled": False},  # about the network: no transcripts (and no speech worker) needed
    )
    hosts = [simulated_network.add_host("a"), simulated_network.add_host("b")]
    (tmp_path / "logs").mkdir()
    stack = Stack(settings, kinds=(), log_dir=tmp_path / "logs")
    client = Client(settings, source="test")
    try:
        wait_until(lambda: _pings(client), timeout_s=15, what="redis-server on the store host")
        stack.start()
        for host in hosts:
            for kind in ("cpu", "gpu", "index"):
                stack.spawn(kind, wrapper=host.wrapper)  # type: ignore[arg-type]
        stack.wait_ready(240)
        yield stack, client, hosts
    finally:
        client.close()
        stack.stop()
        redis_process.terminate()
        redis_process.wait(timeout=15)


def _pings(client: Client) -> bool:
    try:
        return bool(client.redis.ping())
    except Exception:  # not up yet
        return False


def on_host(stack: Stack, host: Host) -> list[WorkerProcess]:
    return [w for w in stack.workers if w.wrapper == host.wrapper]


def reconnected(worker: WorkerProcess) -> bool:
    """Has the worker's consumer connected to the broker again (Celery logs each connection)?"""
    assert worker.log_path is not None
    return worker.log_path.read_text(errors="replace").count("] Connected to ") >= 2


_READY = re.compile(r"(\S+@\S+) ready\.")


def consuming(app: Celery, worker: WorkerProcess) -> bool:
    """Has the worker reconnected, or does its consumer answer a control ping? A connection
    can also outlast the partition: the packets were dropped, not refused, and TCP resends
    what waited once the link is back, before any read timed out (socket_timeout 30 s, the
    partition 18 s), so whether a consumer reconnects at all is down to timing."""
    if reconnected(worker):
        return True
    assert worker.log_path is not None
    names = _READY.findall(worker.log_path.read_text(errors="replace"))
    return bool(names) and bool(app.control.ping(destination=[names[-1]], timeout=1.0))


def _logs_of(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.kind} {w.process.pid}:\n{w.log_tail(15)}" for w in workers)


def processed(worker: WorkerProcess, upload_ids: set[str]) -> set[str]:
    """Uploads of `upload_ids` a worker ran a task of (its log's "succeeded" lines)."""
    assert worker.log_path is not None
    found = re.findall(r"\[upload=([^\]]+)\] Task \S+ succeeded", worker.log_path.read_text(errors="replace"))
    return set(found) & upload_ids


def test_a_worker_host_cut_off_past_the_visibility_timeout_loses_and_duplicates_nothing(
    multi_host: tuple[Stack, Client, list[Host]], simulated_network: Network
) -> None:
    stack, client, (cut, _other) = multi_host
    cut_pids = {w.process.pid for w in on_host(stack, cut)}
    uploads = [synthetic_upload(i, run="partition") for i in range(UPLOADS)]
    submitter = Submitter(client, uploads, rate_per_s=RATE_PER_S)
    submitter.start()
    wait_until(lambda: len(submitter.submitted) >= UPLOADS // 3, timeout_s=120, what="a third of the uploads")

    simulated_network.partition(cut)
    print(f"host {cut.name} cut off after {len(submitter.submitted)} uploads for {PARTITION_S} s")
    time.sleep(PARTITION_S)  # the partition lasts this long while uploads go on
    simulated_network.heal(cut)
    submitter.join()
    assert submitter.error is None, repr(submitter.error)

    # The host rejoins: its workers heartbeat again and their consumers reconnect (a worker
    # that had to be restarted counts as rejoined too).
    wait_until(
        lambda: {w.process.pid for w in on_host(stack, cut)} <= stack.live_pids(),
        timeout_s=90,
        what=f"{cut.name}'s workers to heartbeat again",
        poll_s=1,
    )
    with make_celery(stack.settings) as app:  # one broker connection for every ping
        wait_until(
            lambda: all(w.process.pid not in cut_pids or consuming(app, w) for w in on_host(stack, cut)),
            timeout_s=90,
            what=lambda: f"{cut.name}'s consumers to consume again:\n{_logs_of(on_host(stack, cut))}",
            poll_s=1,
        )
    later = [synthetic_upload(i, run="rejoined") for i in range(AFTER_HEAL)]
    after = Submitter(client, later, rate_per_s=RATE_PER_S)
    after.start()
    after.join()
    everything = [u.upload_id for u in uploads + later]
    finished, restarted = supervise_until_finished(stack, client, everything, timeout_s=240)
    accounting = account(client, everything)
    late_ids = {u.upload_id for u in later}
    by_cut_host = set().union(*(processed(w, late_ids) for w in on_host(stack, cut)))
    survivors = cut_pids & {w.process.pid for w in stack.workers}
    print(
        f"partition run: {len(finished)} finished, {restarted} workers restarted, "
        f"{len(survivors)} of {len(cut_pids)} cut-off workers kept running, "
        f"{len(by_cut_host)} of {AFTER_HEAL} later uploads touched by the rejoined host; {accounting.summary()}"
    )
    assert not accounting.problems(), accounting.summary()
    assert dict(accounting.statuses) == {"indexed": UPLOADS + AFTER_HEAL}, accounting.summary()
    assert by_cut_host, "the rejoined host took no work"
