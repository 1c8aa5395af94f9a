"""A worker host whose clock is 30 s behind: its workers are listed as live, and uploads that
pass through both hosts' workers end indexed exactly once.

The clock is skewed with libfaketime (Debian package ``faketime``): ``LD_PRELOAD`` of
``libfaketime.so.1`` with ``FAKETIME=-30s`` makes every wall-clock read of those worker
processes (``time.time``, ``datetime.now``: ``clock_gettime(CLOCK_REALTIME)``) 30 s behind,
in the worker and its prefork children, while the monotonic clock stays real
(``DONT_FAKE_MONOTONIC=1``: timeouts keep their length, as on a host whose NTP is merely
off). Redis, the test and the other workers keep the machine's clock. Skipped, with the
reason, where libfaketime is not installed."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from producers.client import Client
from producers.stack import Stack
from shared.heartbeat import live_workers
from shared.redis_clock import server_time
from tests.robustness.support import FAST_RECOVERY
from tests.support.chaos import Submitter, account, supervise_until_finished, synthetic_upload
from tests.support.stack import stack_settings

pytestmark = pytest.mark.integration

SKEW_S = 30
UPLOADS = 100


def libfaketime() -> Path | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return Path(found[0]) if found else None


@pytest.fixture
def skewed_env() -> dict[str, str]:
    library = libfaketime()
    if library is None:
        pytest.skip("clock-skew test needs libfaketime (Debian package faketime: apt-get install faketime)")
    return {"LD_PRELOAD": str(library), "FAKETIME": f"-{SKEW_S}s", "DONT_FAKE_MONOTONIC": "1"}


@pytest.fixture
def two_clocks(
    tmp_path: Path, model_cache: Path, skewed_env: dict[str, str]
) -> Iterator[tuple[Stack, Client, set[int]]]:
    # About clocks: no transcripts (and no speech worker) needed.
    settings = stack_settings(
        tmp_path, model_cache, worker={**FAST_RECOVERY, "max_deliveries": 8}, speech={"enabled": False}
    )
    (tmp_path / "logs").mkdir()
    stack = Stack(settings, kinds=(), log_dir=tmp_path / "logs")
    client: Client | None = None
    try:
        stack.start()
        for kind in ("cpu", "index"):
            stack.spawn(kind)
        skewed = {stack.spawn(kind, env=skewed_env).process.pid for kind in ("cpu", "gpu", "index")}  # type: ignore[arg-type]
        stack.wait_ready(240)  # a skewed worker was never listed live: this timed out
        client = Client(settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")}), source="test")
        yield stack, client, skewed
    finally:
        if client is not None:
            client.close()
        stack.stop()


def test_a_worker_host_30_s_behind_is_live_and_loses_and_duplicates_nothing(
    two_clocks: tuple[Stack, Client, set[int]],
) -> None:
    stack, client, skewed = two_clocks
    now = server_time(client.redis)
    started = {int(str(beat["pid"])): float(str(beat["started_at"])) for beat in live_workers(client.redis, "omnibind")}
    assert skewed <= set(started)
    # The skew is real: those workers' own clocks read 30 s behind Redis'.
    assert all(now - started[pid] > SKEW_S - 5 for pid in skewed), started

    uploads = [synthetic_upload(i, run="skew") for i in range(UPLOADS)]
    submitter = Submitter(client, uploads, rate_per_s=10)
    submitter.start()
    submitter.join()
    assert submitter.error is None, repr(submitter.error)
    finished, restarted = supervise_until_finished(stack, client, submitter.submitted, timeout_s=240)
    accounting = account(client, [u.upload_id for u in uploads])
    resent = sum(w.log_path.read_text(errors="replace").count("sending it again") for w in stack.workers if w.log_path)
    print(
        f"clock skew run: {len(finished)} finished, {restarted} restarted, {resent} sent again by a sweeper; "
        f"{accounting.summary()}"
    )
    assert not accounting.problems(), accounting.summary()
    assert dict(accounting.statuses) == {"indexed": UPLOADS}, accounting.summary()
