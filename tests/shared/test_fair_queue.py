"""Fair queues between tenants (`shared.fair_queue`) against a real redis-server: uploads
submitted through the producer client wait in their tenant's list and the dispatcher sends
them in weighted round robin, within its window; a dispatcher killed with SIGKILL, or one
whose Redis refuses writes, loses nothing and sends each upload once (at most the one it was
sending when killed twice). With real Celery workers: tests/integration/test_fairness.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producers.client import Client
from shared.config import Settings
from shared.errors import Busy, PermanentError
from shared.events import Stage, UploadEvent
from shared.fair_queue import FairDispatcher
from shared.queue import UPLOAD_HEADER
from shared.redis_keys import RedisKeys
from tests.support.waiting import wait_until
from workers.sweeper import StallSweeper

ROOT = Path(__file__).resolve().parents[2]
KEYS = RedisKeys("omnibind")


@pytest.fixture
def fair_client(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Callable[..., Client]]:
    """`fair_client(**fairness_settings)`: a producer client with fair queues on."""
    clients: list[Client] = []

    def factory(**fairness: Any) -> Client:
        settings = make_settings(redis_url=redis_url, fairness={"enabled": True, **fairness})
        clients.append(Client(settings, source="test"))
        return clients[-1]

    yield factory
    for client in clients:
        client.close()


class Sent(list[UploadEvent]):
    """A dispatcher's `send`: the events sent, in order, and which went marked sparse."""

    def __init__(self) -> None:
        super().__init__()
        self.sparse: dict[str, bool] = {}

    def __call__(self, event: UploadEvent, sparse: bool) -> None:
        self.append(event)
        self.sparse[event.id] = sparse


def submit(client: Client, tenant: str | None, count: int) -> list[str]:
    name = tenant or "none"
    return [
        client.enqueue(UploadEvent(id=f"{name}-{n}", text=f"note {n} of {name}", tenant=tenant)) for n in range(count)
    ]


def cpu_queue_uploads(conn: redis.Redis) -> list[str]:
    """The uploads of the messages in the cpu queue (kombu's list), oldest first."""
    raw: Any = conn.lrange(KEYS.queue("cpu"), 0, -1)
    return [json.loads(message)["headers"][UPLOAD_HEADER] for message in reversed(raw)]


def test_uploads_wait_in_their_tenants_queue_and_are_dispatched_in_turn(fair_client: Callable[..., Client]) -> None:
    client = fair_client(window=100)
    acme, beta, none = submit(client, "acme", 10), submit(client, "beta", 3), submit(client, None, 2)
    assert client.redis.llen(KEYS.queue("cpu")) == 0, "nothing goes to the pipeline before its turn"
    assert client.fair_queue.waiting() == 15
    sent = Sent()

    assert FairDispatcher(client.fair_queue, sent).run_once() == 15

    turns = [acme[0], beta[0], none[0], acme[1], beta[1], none[1], acme[2], beta[2], *acme[3:]]
    assert [event.id for event in sent] == turns
    assert client.fair_queue.waiting() == 0 and client.redis.llen(KEYS.fair_active) == 0


def test_a_tenants_weight_is_how_many_uploads_it_gets_per_turn(fair_client: Callable[..., Client]) -> None:
    client = fair_client(window=100, weights={"acme": 3})
    acme, beta = submit(client, "acme", 10), submit(client, "beta", 3)
    sent = Sent()
    FairDispatcher(client.fair_queue, sent).run_once()
    # In each pass over the tenants: 3 of acme's, 1 of beta's.
    expected = [*acme[0:3], beta[0], *acme[3:6], beta[1], *acme[6:9], beta[2], acme[9]]
    assert [event.id for event in sent] == expected


def test_the_window_bounds_each_tenants_dispatched_uploads_that_are_unfinished(
    fair_client: Callable[..., Client],
) -> None:
    client = fair_client(window=4)
    ids = submit(client, "acme", 10)
    sent = Sent()
    dispatcher = FairDispatcher(client.fair_queue, sent)
    assert dispatcher.run_once() == 4
    assert dispatcher.run_once() == 0, "four unfinished: the window is full"
    for upload_id in ids[:2]:
        client.statuses.fail(upload_id, Stage.PREPROCESS, PermanentError("test", reason="corrupt_media"))
    assert dispatcher.run_once() == 2
    assert [event.id for event in sent] == ids[:6]
    # Another tenant is not held back by acme's full window: its uploads go at once.
    beta = submit(client, "beta", 5)
    assert dispatcher.run_once() == 4
    assert [event.id for event in sent[-4:]] == beta[:4]
    assert dispatcher.run_once() == 0


def finish(client: Client, upload_ids: list[str]) -> None:
    for upload_id in upload_ids:
        client.statuses.fail(upload_id, Stage.PREPROCESS, PermanentError("test", reason="corrupt_media"))


def backlog_then_one(
    fair_client: Callable[..., Client], **fairness: Any
) -> tuple[Client, FairDispatcher, Sent, list[str], list[str]]:
    """acme's 10 uploads, its first window (2) dispatched and finished, then one of beta's."""
    client = fair_client(window=2, **fairness)
    acme = submit(client, "acme", 10)
    sent = Sent()
    dispatcher = FairDispatcher(client.fair_queue, sent)
    assert dispatcher.run_once() == 2
    beta = submit(client, "beta", 1)
    finish(client, acme[:2])
    return client, dispatcher, sent, acme, beta


def test_a_tenant_with_a_backlog_waits_while_one_without_has_an_upload_in_flight(
    fair_client: Callable[..., Client],
) -> None:
    client, dispatcher, sent, acme, beta = backlog_then_one(fair_client, sparse_hold_max_s=60)

    assert dispatcher.run_once() == 1, "beta's one upload goes; acme's backlog waits for it"
    assert [event.id for event in sent] == [*acme[:2], *beta]
    assert dispatcher.run_once() == 0
    finish(client, beta)
    assert dispatcher.run_once() == 2, "beta's upload finished: acme fills its window again"
    assert [event.id for event in sent[3:]] == acme[2:4]


def test_beside_a_backlog_the_uploads_of_a_tenant_without_one_are_sent_marked_sparse(
    fair_client: Callable[..., Client],
) -> None:
    _, dispatcher, sent, acme, beta = backlog_then_one(fair_client, sparse_hold_max_s=60)
    assert dispatcher.run_once() == 1
    assert sent.sparse == {acme[0]: False, acme[1]: False, beta[0]: True}, "the batchers hold none of beta's"


def test_without_a_backlog_anywhere_nothing_is_marked_sparse(fair_client: Callable[..., Client]) -> None:
    client = fair_client(window=2)
    ids = submit(client, "acme", 2) + submit(client, "beta", 1)
    sent = Sent()
    assert FairDispatcher(client.fair_queue, sent).run_once() == 3
    assert sent.sparse == dict.fromkeys(ids, False), "nobody to protect: batching as usual"


def test_a_held_back_tenant_gets_an_upload_after_the_longest_hold(fair_client: Callable[..., Client]) -> None:
    client = fair_client(window=1, sparse_hold_max_s=5)
    acme = submit(client, "acme", 10)
    now_ms = [1_000_000]
    sent = Sent()
    dispatcher = FairDispatcher(client.fair_queue, sent, clock_ms=lambda: now_ms[0])
    assert dispatcher.run_once() == 1
    finish(client, acme[:1])
    submit(client, "beta", 1)  # beta's upload is never finished: it would hold acme for ever
    assert dispatcher.run_once() == 1 and sent[-1].tenant == "beta"
    now_ms[0] += 4_000
    assert dispatcher.run_once() == 0
    now_ms[0] += 1_000
    assert dispatcher.run_once() == 1 and sent[-1].id == acme[1]


def test_without_sparse_first_a_backlog_is_dispatched_beside_others(fair_client: Callable[..., Client]) -> None:
    _, dispatcher, sent, acme, beta = backlog_then_one(fair_client, sparse_first=False)
    assert dispatcher.run_once() == 3
    assert [event.id for event in sent[2:]] == [acme[2], beta[0], acme[3]]
    assert not any(sent.sparse.values()), "nothing is marked sparse"


def test_the_stall_sweeper_leaves_uploads_waiting_for_their_turn_alone(fair_client: Callable[..., Client]) -> None:
    client = fair_client(window=2)
    ids = submit(client, "acme", 6)
    lost = Sent()  # dispatched into nowhere: their messages are lost
    FairDispatcher(client.fair_queue, lost).run_once()
    resent = Sent()
    sweeper = StallSweeper(
        client.redis,
        client.statuses,
        resent.append,
        prefix="omnibind",
        stall_timeout_s=0.001,
        interval_s=60,
        fair=client.fair_queue,
    )
    time.sleep(0.01)  # the clock passes the stall timeout (1 ms)
    assert sorted(sweeper.sweep()) == ids[:2], "only the two dispatched (and lost) ones"
    assert [event.id for event in resent] == ids[:2]


def _dispatcher_process(settings: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
    env |= {
        "OMNIBIND_REDIS_URL": settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        "OMNIBIND_DATA_DIR": str(settings.data_dir),
        "OMNIBIND_FAIRNESS__ENABLED": "true",
        "OMNIBIND_FAIRNESS__WINDOW": "100000",
        "OMNIBIND_FAIRNESS__LOCK_TTL_S": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.fair_dispatcher"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )


def all_dispatched(client: Client) -> bool:
    return client.fair_queue.waiting() == 0 and client.redis.hlen(KEYS.fair_dispatching) == 0


def test_a_dispatcher_killed_by_sigkill_loses_nothing_and_its_successor_sends_the_rest(
    fair_client: Callable[..., Client],
) -> None:
    client = fair_client()
    conn = client.redis
    ids = submit(client, "acme", 400) + submit(client, "beta", 100)
    first = _dispatcher_process(client.settings)
    try:
        wait_until(lambda: conn.llen(KEYS.queue("cpu")) >= 80, timeout_s=60, what="80 uploads sent", poll_s=0.02)
    finally:
        first.send_signal(signal.SIGKILL)  # also when the wait fails: it must not outlive the test
    assert first.wait(timeout=30) == -signal.SIGKILL
    left = client.fair_queue.waiting()
    assert left > 0, "killed midway"

    second = _dispatcher_process(client.settings)
    try:
        wait_until(lambda: all_dispatched(client), timeout_s=60, what="every upload dispatched", poll_s=0.02)
    finally:
        second.terminate()
        second.wait(timeout=30)

    sent = Counter(cpu_queue_uploads(conn))
    assert set(sent) == set(ids), "every accepted upload reached the cpu queue"
    assert sum(sent.values()) - len(ids) <= 1, "at most the upload being sent at the kill went twice"
    assert conn.zcard(KEYS.fair_dispatched) == len(ids)


def test_a_dispatcher_waits_out_redis_refusing_writes_and_then_sends_everything(
    fair_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    client = fair_client(lock_ttl_s=1, window=100)
    conn = client.redis
    ids = submit(client, "acme", 20) + submit(client, "beta", 5)
    conn.config_set("min-replicas-to-write", 1)  # no replica: Redis refuses every write (NOREPLICAS)
    dispatcher = FairDispatcher(client.fair_queue, client.send_to_pipeline).start()
    try:
        wait_until(
            lambda: caplog.text.count("fair dispatcher paused") >= 2,
            timeout_s=60,
            what="two dispatch rounds to meet the refusal",
            poll_s=0.02,
        )
        assert conn.llen(KEYS.queue("cpu")) == 0 and client.fair_queue.waiting() == 25
        conn.config_set("min-replicas-to-write", 0)
        wait_until(lambda: all_dispatched(client), timeout_s=60, what="every upload dispatched", poll_s=0.02)
    finally:
        dispatcher.stop()
    assert sorted(cpu_queue_uploads(conn)) == sorted(ids)


def test_a_tenants_flood_is_refused_at_its_own_backlog_while_others_are_still_taken(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(
        redis_url=redis_url, fairness={"enabled": True}, backpressure={"max_cpu_queue": 5, "retry_after_s": 1}
    )
    with Client(settings, source="test") as client:
        submit(client, "acme", 6)
        with pytest.raises(Busy):
            client.enqueue(UploadEvent(id="acme-flood", text="one too many", tenant="acme"))
        assert submit(client, "beta", 3) == ["beta-0", "beta-1", "beta-2"], "beta's door is its own"
        assert submit(client, None, 1) == ["none-0"]
        assert client.fair_queue.waiting() == 10
