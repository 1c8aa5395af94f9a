from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producers.embedded_redis import EmbeddedRedis
from shared.config import Settings
from shared.errors import ConfigError
from shared.events import UploadEvent
from shared.redis_client import (
    RedisUnavailable,
    build_url,
    redact_url,
    redis_client,
    redis_client_from_settings,
    resolve_redis_url,
    translate_redis_errors,
    with_password,
)
from shared.status import StatusStore
from tests.support.redis_server import RedisServers

# Every character that means something in a URL, plus the escape character itself.
AWKWARD_PASSWORD = "p/a#s?s%w@rd:x"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://hunter2@host:6380", "rediss://***@host:6380"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///run/redis.sock?db=1&password=hunter2", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://:p%40ss%3Aw@host:1/0", "redis://:***@host:1/0"),
        ("redis://:hun#ter2@host:1/0", "redis://:***@host:1/0"),
        ("redis://:hunter2/x@host:1/0", "redis://:***@host:1/0"),
        ("redis://host:1/0?password=hun#ter2&db=1", "redis://host:1/0?password=***&db=1"),
        ("hunter2", "***"),
    ],
)
def test_redact_url_hides_every_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "hunter2" not in redact_url(url)


def test_build_url_percent_encodes_the_password() -> None:
    url = build_url("127.0.0.1", 6390, password="p@ss:w/rd")
    assert url == "redis://:p%40ss%3Aw%2Frd@127.0.0.1:6390/0"
    assert redis.Redis.from_url(url).connection_pool.connection_kwargs["password"] == "p@ss:w/rd"


def test_client_talks_to_a_real_server_with_decoded_replies(redis_servers: RedisServers) -> None:
    server = redis_servers.start(password="pw")
    client = redis_client(server.url)
    client.set("k", "v")
    assert client.get("k") == "v"


def test_client_reconnects_after_the_server_restarts(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    client = redis_client(server.url, retries=10)
    client.set("k", "before")
    port, data_dir = server.port, server.data_dir
    server.stop()
    redis_servers.start(data_dir=data_dir, port=port)
    assert client.get("k") == "before"


def test_unreachable_redis_raises_redis_unavailable(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    url = server.url
    server.stop()
    client = redis_client(url, retries=1, connect_timeout_s=0.5)
    store = StatusStore(client)
    with pytest.raises(RedisUnavailable) as info:
        store.get("some-upload")
    assert info.value.reason == "redis_unavailable"


def test_wrong_password_raises_config_error(redis_servers: RedisServers, caplog: pytest.LogCaptureFixture) -> None:
    server = redis_servers.start(password="right")
    # Distinctive: the test's tmp dir (logged when the server starts) contains "wrong" too.
    client = redis_client(build_url("127.0.0.1", server.port, password="wrong-pw-7Qx"), retries=0)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError, match="credentials"):
        StatusStore(client).get("some-upload")
    assert "wrong-pw-7Qx" not in caplog.text


def test_other_redis_errors_are_not_disguised(redis_conn: redis.Redis) -> None:
    redis_conn.set("plain-string", "x")
    with pytest.raises(redis.ResponseError), translate_redis_errors("reading"):
        redis_conn.hgetall("plain-string")


def test_malformed_url_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        redis_client("http://user:secret@host/0")


def test_configured_url_wins_over_the_embedded_server(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url="redis://:pw@elsewhere:6379/2")
    assert resolve_redis_url(settings) == "redis://:pw@elsewhere:6379/2"


def test_without_a_url_the_embedded_server_url_is_used(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis={"embedded_port": 6391, "embedded_password": "pw"})
    assert resolve_redis_url(settings) == "redis://:pw@127.0.0.1:6391/0"
    assert EmbeddedRedis.from_settings(settings).data_dir == settings.data_dir / "redis"


def test_embedded_port_zero_has_no_url_for_other_processes(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis={"embedded_port": 0})
    with pytest.raises(ConfigError, match="OMNIBIND_REDIS_URL"):
        resolve_redis_url(settings)


def test_redis_settings_come_from_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIBIND_REDIS_URL", "redis://h:1/0")
    monkeypatch.setenv("OMNIBIND_REDIS__STATUS_TTL_S", "60")
    settings: Any = Settings()
    assert settings.redis_url.get_secret_value() == "redis://h:1/0"
    assert settings.redis.status_ttl_s == 60


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://redis:6379/0", "redis://:p%2Fa%23s%3Fs%25w%40rd%3Ax@redis:6379/0"),
        ("redis://user:old@host:1/2?x=1", "redis://user:p%2Fa%23s%3Fs%25w%40rd%3Ax@host:1/2?x=1"),
        ("rediss://host:6380", "rediss://:p%2Fa%23s%3Fs%25w%40rd%3Ax@host:6380"),
        ("redis://host:6379?db=3", "redis://:p%2Fa%23s%3Fs%25w%40rd%3Ax@host:6379?db=3"),
        ("unix:///run/redis.sock?db=1", "unix://:p%2Fa%23s%3Fs%25w%40rd%3Ax@/run/redis.sock?db=1"),
    ],
)
def test_with_password_escapes_any_password_into_the_userinfo(url: str, expected: str) -> None:
    assert with_password(url, AWKWARD_PASSWORD) == expected
    assert redis.Redis.from_url(expected).connection_pool.connection_kwargs["password"] == AWKWARD_PASSWORD
    assert AWKWARD_PASSWORD not in redact_url(expected) and "p%2F" not in redact_url(expected)


def test_the_password_setting_reaches_a_real_server_through_the_workers_client(
    redis_servers: RedisServers, make_settings: Callable[..., Settings]
) -> None:
    server = redis_servers.start(password=AWKWARD_PASSWORD)
    settings = make_settings(redis_url=f"redis://127.0.0.1:{server.port}/0", redis={"password": AWKWARD_PASSWORD})
    client = redis_client_from_settings(settings)
    try:
        client.set("k", "v")
        assert client.get("k") == "v"
    finally:
        client.close()


def test_the_password_setting_wins_over_a_password_in_the_url(
    redis_servers: RedisServers, make_settings: Callable[..., Settings]
) -> None:
    server = redis_servers.start(password=AWKWARD_PASSWORD)
    stale_url = f"redis://:stale@127.0.0.1:{server.port}/0"
    settings = make_settings(redis_url=stale_url, redis={"password": AWKWARD_PASSWORD})
    client = redis_client_from_settings(settings)
    try:
        assert client.ping()
    finally:
        client.close()


def test_a_password_setting_without_a_url_is_a_config_error(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis={"password": "pw"})
    with pytest.raises(ConfigError, match="OMNIBIND_REDIS__EMBEDDED_PASSWORD"):
        resolve_redis_url(settings)


def test_the_redis_password_comes_from_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIBIND_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("OMNIBIND_REDIS__PASSWORD", AWKWARD_PASSWORD)
    settings = Settings()
    assert resolve_redis_url(settings) == "redis://:p%2Fa%23s%3Fs%25w%40rd%3Ax@redis:6379/0"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cr#et-pw@localhost:6379/0",
        "redis://:s3cr/et-pw@localhost:6379/0",
        "redis://:s3cr?et-pw@localhost:6379/0",
        "redis://user:s3cr#et-pw@localhost:notaport/0",
        "redis://:s3cr#et-pw@[::1/0",
        "s3cr#et-pw",
    ],
)
def test_an_unparsable_redis_url_is_refused_without_showing_its_password(
    url: str, make_settings: Callable[..., Settings]
) -> None:
    for attempt in (
        lambda: redis_client(url),
        lambda: resolve_redis_url(make_settings(redis_url=url)),
        lambda: resolve_redis_url(make_settings(redis_url=url, redis={"password": "other"})),
    ):
        with pytest.raises(ConfigError) as refused:
            attempt()
        shown = refused.value.message
        assert "invalid Redis URL" in shown
        assert not any(part in shown for part in ("s3cr", "et-pw")), shown


def test_a_redis_refusing_writes_reaches_callers_as_redis_unavailable(redis_conn: redis.Redis) -> None:
    # NOREPLICAS arrives as a plain ResponseError, and from inside the status script wrapped
    # in "Error running script ...": both must be transient, not a crash or a dead letter.
    store = StatusStore(redis_conn, "refusal")
    redis_conn.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(RedisUnavailable, match="NOREPLICAS"), translate_redis_errors("writing"):
            redis_conn.xadd("refusal:results", {"a": "b"})
        with pytest.raises(RedisUnavailable, match="NOREPLICAS"):
            store.create(UploadEvent(text="x"))
    finally:
        redis_conn.config_set("min-replicas-to-write", 0)
    assert store.create(UploadEvent(text="x"))


@pytest.mark.parametrize(
    "message",
    [
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
        "Error running script (call to f_1): @user_script:52: -MISCONF Errors writing to the AOF file",
        "Command # 1 (XADD s * a b) of pipeline caused error: NOREPLICAS Not enough good replicas to write.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "BUSY Redis is busy running a script.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
    ],
)
def test_every_refusal_code_is_transient(message: str) -> None:
    with pytest.raises(RedisUnavailable), translate_redis_errors("writing"):
        raise redis.ResponseError(message)


@pytest.mark.parametrize(
    "message",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "BUSYGROUP Consumer Group name already exists",
    ],
)
def test_command_errors_are_not_refusals(message: str) -> None:
    with pytest.raises(redis.ResponseError), translate_redis_errors("writing"):
        raise redis.ResponseError(message)
