"""Celery wiring: no pickle on the wire, delivery settings that lose nothing, and clocks that
keep a message from being run twice at once."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.serialization import dumps, loads, prepare_accept_content

from shared.config import Settings
from shared.errors import ConfigError
from shared.queue import QueueName, TaskName, celery_config, longest_hold_s, make_celery
from shared.redis_client import build_url, redis_client
from tests.support.redis_server import RedisServers

ROOT = Path(__file__).resolve().parents[2]
PICKLE_CONTENT_TYPE = "application/x-python-serialize"


class Exploit:
    """Unpickling this runs a command: what a pickle message on the wire could do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch /tmp/omnibind-pwned",))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")


def test_only_msgpack_and_json_are_sent_or_accepted(settings: Settings) -> None:
    conf = make_celery(settings).conf
    assert conf.task_serializer == "msgpack" and conf.result_serializer == "msgpack"
    assert set(conf.accept_content) == {"msgpack", "json"}
    assert set(conf.result_accept_content) == {"msgpack", "json"}


def test_a_pickled_message_is_refused_before_it_is_unpickled(settings: Settings) -> None:
    accept = prepare_accept_content(make_celery(settings).conf.accept_content)
    payload = pickle.dumps(Exploit())

    with pytest.raises(ContentDisallowed):
        loads(payload, PICKLE_CONTENT_TYPE, "binary", accept=accept)
    assert not Path("/tmp/omnibind-pwned").exists()


def test_what_we_send_is_accepted(settings: Settings) -> None:
    accept = prepare_accept_content(make_celery(settings).conf.accept_content)
    content_type, encoding, body = dumps([{"id": "u1", "array": b"\x00\x01"}, {}, {}], serializer="msgpack")
    assert loads(body, content_type, encoding, accept=accept)[0]["id"] == "u1"


def test_no_code_configures_pickle() -> None:
    pattern = re.compile(r"""["']pickle["']|x-python-serialize|cloudpickle|\bdill\b|yaml\.load\(|marshal\.loads""")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in ("shared", "workers", "producers")
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders


def test_torch_checkpoints_are_loaded_without_arbitrary_unpickling() -> None:
    calls = [
        line.strip()
        for path in (ROOT / "shared").rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if "torch.load(" in line and not line.lstrip().startswith(("#", "`"))
    ]
    assert calls and all("weights_only=True" in call for call in calls)


def test_late_acks_and_requeue_on_worker_loss_and_hard_timeouts(settings: Settings) -> None:
    conf = celery_config(settings)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["task_acks_on_timeout"] is False, "a task killed at its hard limit must be redelivered, not dropped"
    assert conf["worker_prefetch_multiplier"] == 1
    transport = conf["broker_transport_options"]
    assert transport["unacked_restore_throttle"] == 1
    assert transport["unacked_mutex_expire"] <= 10, "a worker killed while restoring must not stall restoring"
    assert transport["visibility_timeout"] > longest_hold_s(settings.worker)


def test_defaults_keep_every_held_message_within_the_visibility_timeout(settings: Settings) -> None:
    worker = settings.worker
    assert worker.retry_backoff_max_s + 2 * worker.task_time_limit_s < worker.visibility_timeout_s


@pytest.mark.parametrize(
    "worker",
    [
        {"visibility_timeout_s": 100, "task_time_limit_s": 100},
        {"visibility_timeout_s": 100, "task_time_limit_s": 40, "retry_backoff_max_s": 30},
    ],
    ids=["time-limit-too-long", "retry-countdown-too-long"],
)
def test_a_message_that_could_outlive_the_visibility_timeout_is_a_config_error(
    tmp_path: Path, worker: dict[str, float]
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", worker=worker)
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT_S must exceed"):
        celery_config(settings)


def test_the_broker_and_result_backend_log_in_with_any_password(
    redis_servers: RedisServers, make_settings: Callable[..., Settings]
) -> None:
    """Celery's broker (kombu) and result backend parse the URL of `celery_config` themselves:
    the password setting must survive both, whatever its characters."""
    password = "p/a#s?s%w@rd:x"
    server = redis_servers.start(password=password)
    settings = make_settings(redis_url=f"redis://127.0.0.1:{server.port}/0", redis={"password": password})
    app = make_celery(settings, "omnibind-test")
    try:
        app.send_task(TaskName.PREPROCESS, args=["upload-1"])
        app.backend.store_result("task-1", {"ok": True}, "SUCCESS")
        assert app.backend.get_task_meta("task-1")["result"] == {"ok": True}
    finally:
        app.close()
    with redis_client(build_url("127.0.0.1", server.port, password=password)) as client:
        assert client.llen(f"{settings.queue_prefix}:{QueueName.CPU}") == 1
