"""Sentinel groups: the redis+sentinel:// URL, the Celery settings made from it, and clients
that follow a real failover (primary + replica + three sentinels, the primary kill -9-ed)."""

from __future__ import annotations

import os
import signal

import pytest

from shared.config import Settings
from shared.errors import ConfigError
from shared.queue import GUARDED_SENTINEL_TRANSPORT, celery_config
from shared.redis_client import RedisUnavailable, redact_url, redis_client, resolve_redis_url
from shared.redis_sentinel import SentinelTarget, kombu_url, parse_sentinel_url
from shared.replication import wait_for_replicas
from tests.support.sentinel import SentinelGroup


def test_url_names_sentinels_group_db_and_passwords() -> None:
    target = parse_sentinel_url("redis+sentinel://:p%40ss@h1:26379,h2,[::1]:26380/main/3?sentinel_password=s%26")
    assert target == SentinelTarget((("h1", 26379), ("h2", 26379), ("::1", 26380)), "main", 3, None, "p@ss", "s&")
    assert kombu_url(target) == (
        "sentinel://:p%40ss@h1:26379/3;sentinel://:p%40ss@h2:26379/3;sentinel://:p%40ss@[::1]:26380/3"
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no group name
        "redis+sentinel:///main",  # no sentinel
        "redis+sentinel://h1:port/main",
        "redis+sentinel://h1:26379/main/x",
        "redis+sentinel://h1:26379/main?other=1",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        redis_client(url)


def test_passwords_are_applied_and_redacted() -> None:
    settings = Settings(
        redis_url="redis+sentinel://h1:1,h2:2/main",
        redis={"password": "pri/mary", "sentinel_password": "sen#tinel"},
    )
    url = resolve_redis_url(settings)
    target = parse_sentinel_url(url)
    assert (target.password, target.sentinel_password) == ("pri/mary", "sen#tinel")
    shown = redact_url(url)
    assert "pri" not in shown and "sen" not in shown.replace("sentinel", ""), shown


def test_celery_uses_kombus_sentinel_form_with_the_guarded_transport() -> None:
    settings = Settings(redis_url="redis+sentinel://h1:1,h2:2/main/2", redis={"sentinel_password": "s"})
    conf = celery_config(settings)
    assert conf["broker_url"] == conf["result_backend"] == "sentinel://h1:1/2;sentinel://h2:2/2"
    assert conf["broker_transport"] == GUARDED_SENTINEL_TRANSPORT
    for options in (conf["broker_transport_options"], conf["result_backend_transport_options"]):
        assert options["master_name"] == "main"
        assert options["sentinel_kwargs"] == {"password": "s"}
        assert options["global_keyprefix"] == "omnibind:"


@pytest.mark.integration
def test_a_client_follows_the_primary_across_a_kill_9_failover(sentinel_group: SentinelGroup) -> None:
    client = redis_client(sentinel_group.url, retries=8)
    client.set("before", "1")
    assert wait_for_replicas(client, "t", 1, 5000) == 1  # on the replica before the kill
    old = sentinel_group.kill_primary()
    new = sentinel_group.wait_for_failover(old)
    client.set("after", "2")  # the same client object: reconnects to the promoted replica
    assert new.client().mget("before", "after") == ["1", "2"]
    assert client.connection_pool.get_master_address()[1] == new.port  # type: ignore[attr-defined]


@pytest.mark.integration
def test_a_write_no_replica_acknowledges_is_not_confirmed(sentinel_group: SentinelGroup) -> None:
    client = redis_client(sentinel_group.url)
    (replica,) = sentinel_group.replicas()
    os.kill(replica.process.pid, signal.SIGSTOP)  # the replica stops reading its link
    try:
        client.set("k", "v")
        with pytest.raises(RedisUnavailable, match="0 of 1"):
            wait_for_replicas(client, "t", 1, 300)
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    assert wait_for_replicas(client, "t", 1, 5000) == 1
