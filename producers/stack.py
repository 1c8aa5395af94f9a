"""The embedded stack behind `omnibind up` and `omnibind demo`: a redis-server on loopback
(unless OMNIBIND_REDIS_URL points elsewhere) and cpu, gpu, index and speech workers as child
processes. Workers are started by command line (`celery -A workers.app worker ...`; gpu and
speech workers from their entry points, `WORKER_APPS`), so this module never imports worker
code, torch or faster-whisper.

Shutdown order matters: workers first (warm shutdown: running tasks finish, reserved messages
go back to Redis), Redis last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, SecretStr

from producers.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from producers.processes import die_with_parent, stop_process
from shared.backoff import poll
from shared.config import Settings
from shared.cpus import available_cpus
from shared.errors import ConfigError
from shared.heartbeat import live_workers
from shared.redis_client import redis_client, resolve_redis_url

log = logging.getLogger(__name__)

WorkerKind = Literal["cpu", "gpu", "index", "speech"]
WORKER_KINDS: tuple[WorkerKind, ...] = ("cpu", "gpu", "index", "speech")


def default_kinds(settings: Settings) -> tuple[WorkerKind, ...]:
    """The worker kinds a stack runs: speech only when transcripts are enabled."""
    return tuple(kind for kind in WORKER_KINDS if kind != "speech" or settings.speech.enabled)


# Must match workers.gpu.default_max_batch (64 on CUDA, 8 on CPU); decided here without
# importing torch.
AUTO_MAX_BATCH = {"cuda": 64, "cpu": 8}
# Exit status of a worker whose configuration must be fixed (workers.startup.EXIT_CONFIG):
# restarting it as is would fail the same way.
EXIT_CONFIG = 3
# Waits before each attempt to restart an embedded redis-server that died (5 attempts, ~15 s).
REDIS_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
# What a worker logs when its start-up fails (workers.startup.exit_if_start_fails).
START_FAILURE_MARK = "cannot start: "


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as OMNIBIND_* environment variables, so child processes see exactly the
    configuration of their parent (secrets included: children only, never logged). Groups
    become ``GROUP__FIELD`` variables; list and mapping values are JSON, as pydantic-settings
    reads them."""
    env: dict[str, str] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{prefix}__{name}" if prefix else name
            if isinstance(value, BaseModel) and isinstance(info.annotation, type):
                walk(key, value)
            elif value is not None:
                env[f"OMNIBIND_{key.upper()}"] = _env_value(value)

    walk("", settings)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping | list | tuple | BaseModel):
        return json.dumps(_revealed(value))
    return str(_revealed(value))


def _revealed(value: Any) -> Any:
    """`value` as plain JSON-ready data with secrets in clear."""
    if isinstance(value, BaseModel):
        return {name: _revealed(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        return {str(key): _revealed(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(inner) for inner in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    return value


def worker_argv(kind: WorkerKind, settings: Settings) -> list[str]:
    """The command line of one worker process of `kind`.

    cpu: prefork, one process per available CPU (`available_cpus`), prefetch 1 (a long decode never strands reserved
    messages). gpu and index: one process with a threads pool sized to keep two batches in
    flight — each thread holds one task waiting on the batcher, so concurrency, not the
    prefetch multiplier, bounds what the process reserves.
    """
    name = f"{kind}-{uuid.uuid4().hex[:8]}@%h"
    argv = [sys.executable, "-m", "celery", "-A", worker_app(kind), "worker", "-Q", kind, "-n", name]
    # Worker heartbeat events stay on (one small PUBLISH per worker every 2 s): without them
    # a monitor such as Flower shows every worker offline. Task events stay off unless a
    # monitor turns them on.
    argv += ["--without-gossip", "--without-mingle", "--prefetch-multiplier", "1"]
    argv += ["--loglevel", settings.log_level.upper()]
    if kind == "cpu":
        # The container's CPU quota and affinity, not the host's cores (shared.cpus).
        processes = settings.worker.cpu_concurrency or available_cpus()
        return [*argv, "--pool", "prefork", "--concurrency", str(processes)]
    if kind == "gpu":
        # Each thread holds one reserved message; more than two batches' worth would only sit
        # in the batcher, aging towards the visibility timeout.
        return [*argv, "--pool", "threads", "--concurrency", str(max(2, 2 * gpu_max_batch(settings)))]
    if kind == "speech":
        # One model per process, one upload at a time: CTranslate2 parallelises inside a
        # transcription (OMNIBIND_SPEECH__CPU_THREADS); more speech capacity = more workers.
        return [*argv, "--pool", "threads", "--concurrency", "1"]
    return [*argv, "--pool", "threads", "--concurrency", str(max(2, 2 * settings.index.max_batch))]


WORKER_APPS: dict[WorkerKind, str] = {"gpu": "workers.gpu_worker", "speech": "workers.speech_worker"}


def worker_app(kind: WorkerKind) -> str:
    """The module `celery -A` starts a worker of `kind` from: the gpu and speech workers' entry
    points give the app its model runner (torch; faster-whisper); the other kinds run the app
    without either."""
    return WORKER_APPS.get(kind, "workers.app")


def gpu_max_batch(settings: Settings) -> int:
    """The GPU worker's batch cap: the configured one, or the auto value for the device the
    worker will use (`workers.gpu.default_max_batch`)."""
    if settings.gpu.max_batch:
        return settings.gpu.max_batch
    device = settings.model.device
    cuda = device.startswith("cuda") or (device == "auto" and _torch_sees_cuda())
    return AUTO_MAX_BATCH["cuda" if cuda else "cpu"]


def _torch_sees_cuda() -> bool:
    """Whether torch in a worker will use CUDA, as ``device=auto`` decides it
    (``torch.cuda.is_available()``). A driver (``/dev/nvidia0``, ``nvidia-smi``) with a
    CPU-only torch is no GPU, so torch answers, in a child process: this one never imports it.
    Without a driver it cannot answer yes, and no child is started."""
    if not (Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi")):
        return False
    probe = [sys.executable, "-c", "import torch; print(int(torch.cuda.is_available()))"]
    try:
        answer = subprocess.run(probe, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot ask torch whether CUDA is usable (%s): sizing the gpu worker for the CPU", exc)
        return False
    return answer.stdout.strip() == "1"


@dataclass
class WorkerProcess:
    """A worker child process. Its output goes to `log_path`, or, without one, is relayed to
    this process's stderr with the last lines kept in `relayed` (so an error can quote them)."""

    kind: WorkerKind
    process: subprocess.Popen[bytes]
    log_path: Path | None
    started_s: float = field(default_factory=time.monotonic)
    relayed: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    relay: threading.Thread | None = None
    # How it was started (`Stack.spawn`), so a restart starts it the same way.
    wrapper: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is not None:
            if not self.log_path.exists():
                return "(no log file)"
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        if self.relay is not None and self.process.poll() is not None:
            self.relay.join(timeout=5.0)  # the last lines of an exited worker are still in the pipe
        return "\n".join(list(self.relayed)[-lines:]) or "(no output)"

    def exit_message(self) -> str:
        """Why the worker exited: the reason it logged when its start-up failed (see
        `workers.startup.exit_if_start_fails`), else its last lines."""
        head = f"{self.kind} worker exited with code {self.process.returncode}"
        tail = self.log_tail()
        reasons = [_start_failure(line) for line in tail.splitlines() if START_FAILURE_MARK in line]
        if not reasons:
            return f"{head}:\n{tail}"
        where = f" (log: {self.log_path})" if self.log_path else ""
        return f"{head}: {reasons[-1]}{where}"


def _start_failure(line: str) -> str:
    """The reason in a worker's "... cannot start: <reason>" log line (text or JSON format)."""
    with contextlib.suppress(ValueError, AttributeError):
        line = str(json.loads(line).get("message", line))
    return line.split(START_FAILURE_MARK, 1)[-1].strip()


def _relay_output(stream: IO[bytes], kept: deque[str]) -> None:
    """Copy a worker's output to our stderr line by line, keeping the last lines."""
    with stream:
        for raw in iter(stream.readline, b""):
            text = raw.decode(errors="replace")
            sys.stderr.write(text)
            sys.stderr.flush()
            kept.append(text.rstrip("\n"))


class StackError(ConfigError):
    reason = "stack"


class Stack:
    """Redis + workers as child processes. Use as a context manager or start()/stop().

    `log_dir`: each worker's output goes to `<log_dir>/<kind>-<n>.log` (tests, the demo);
    None = relay it to this process's stderr (`omnibind up` in a terminal).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        kinds: Iterable[WorkerKind] | None = None,
        log_dir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 30.0,
        redis_restart_backoff_s: tuple[float, ...] = REDIS_RESTART_BACKOFF_S,
    ) -> None:
        self.settings = settings
        self.redis_restart_backoff_s = redis_restart_backoff_s
        self.kinds = tuple(kinds) if kinds is not None else default_kinds(settings)
        self.log_dir = log_dir
        self.extra_env = dict(extra_env or {})
        self.stop_timeout_s = stop_timeout_s
        self.redis: EmbeddedRedis | None = None
        # With OMNIBIND_REDIS__PASSWORD applied, as every worker will apply it.
        self.redis_url: str | None = resolve_redis_url(settings) if settings.redis_url else None
        self.workers: list[WorkerProcess] = []
        self._spawned = 0
        self._started = False

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, ready_timeout_s: float = 300.0) -> Stack:
        """Start Redis (embedded unless configured) and one worker of each kind; returns when
        every worker reports ready (the GPU worker after loading its model). A started stack
        is returned as is (`with stack.start():` must not start every worker twice).

        Raises `StackError` with the reason a worker gave when one exits during start-up (a
        broken checkpoint, a vector store configuration error...) or is not ready in time.
        """
        if self._started:
            return self
        self._started = True
        try:
            if self.redis_url is None:
                self.redis = EmbeddedRedis.from_settings(self.settings).start()
                self.redis_url = self.redis.url
            for kind in self.kinds:
                self.spawn(kind)
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def child_env(self) -> dict[str, str]:
        assert self.redis_url is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
        env.update(settings_env(self.settings))
        env["OMNIBIND_REDIS_URL"] = self.redis_url
        env["PYTHONUNBUFFERED"] = "1"
        # OpenMP threads that spin-wait between ops burn the cores the other workers need
        # (measured: gpu worker CPU per upload 9.1 -> 3.6 ms with the tiny model on CPU).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.update(self.extra_env)
        return env

    def spawn(
        self, kind: WorkerKind, *, wrapper: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> WorkerProcess:
        """Start one more worker of `kind`; `wrapper` goes before its command line (a test
        runs it on another simulated host: ``ip netns exec HOST``), `env` on top of
        `child_env`."""
        extra_env = dict(env or {})
        child_env = {**self.child_env(), **extra_env, "OMNIBIND_WORKER__KIND": kind}
        self._spawned += 1
        log_path = self.log_dir / f"{kind}-{self._spawned}.log" if self.log_dir else None
        output = log_path.open("ab") if log_path else None
        try:
            process = subprocess.Popen(
                [*wrapper, *worker_argv(kind, self.settings)],
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=output or subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C reaches the supervisor only, which stops workers
                # before Redis.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        finally:
            if output:
                output.close()
        worker = WorkerProcess(kind, process, log_path, wrapper=tuple(wrapper), env=extra_env)
        if process.stdout is not None:
            worker.relay = threading.Thread(
                target=_relay_output, args=(process.stdout, worker.relayed), name=f"{kind}-output", daemon=True
            )
            worker.relay.start()
        self.workers.append(worker)
        log.info("started %s worker (pid %d)", kind, process.pid)
        return worker

    def live_pids(self, kind: str = "*") -> set[int]:
        """Pids of workers whose heartbeat is fresh in Redis."""
        assert self.redis_url is not None
        client = redis_client(self.redis_url, decode_responses=True)
        try:
            return {int(beat["pid"]) for beat in live_workers(client, self.settings.queue_prefix, kind)}  # type: ignore[call-overload]
        finally:
            client.close()

    def wait_ready(self, timeout_s: float, workers: Iterable[WorkerProcess] | None = None) -> None:
        """Block until `workers` (default: all) heartbeat; raise `StackError` with the log tail
        of a worker that exits or stays silent."""
        waiting = list(workers if workers is not None else self.workers)

        def all_ready() -> bool | None:
            nonlocal waiting
            for worker in waiting:
                if worker.process.poll() is not None:
                    raise StackError(worker.exit_message())
            ready = self.live_pids()
            waiting = [w for w in waiting if w.process.pid not in ready]
            return None if waiting else True

        if waiting and poll(all_ready, timeout_s=timeout_s, interval_s=0.2) is None:
            names = ", ".join(f"{w.kind} (pid {w.process.pid})" for w in waiting)
            raise StackError(f"workers not ready after {timeout_s:.0f} s: {names}\n{waiting[0].log_tail()}")

    def kill(self, worker: WorkerProcess, sig: int = signal.SIGKILL) -> None:
        """Signal one worker: SIGTERM to its main process only (a warm shutdown, which stops
        its pool processes itself once their tasks are done), any other signal to its whole
        process group (a prefork worker's children too). SIGKILL and SIGTERM wait for the
        exit and forget the worker."""
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGTERM:
                worker.process.send_signal(sig)
            else:
                os.killpg(worker.process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            worker.process.wait()
            _kill_group_leftovers(worker.process.pid)
            self.workers.remove(worker)

    def restart_dead(self) -> list[WorkerProcess]:
        """Replace workers that exited on their own (used by `omnibind up`'s supervision).

        Raises `StackError` with the worker's reason when one exited with `EXIT_CONFIG`: a
        configuration to fix (a broken checkpoint...) would only fail again.
        """
        restarted = []
        for worker in [w for w in self.workers if w.process.poll() is not None]:
            if worker.process.returncode == EXIT_CONFIG:
                raise StackError(f"{worker.exit_message()}; not restarting it")
            log.warning(
                "%s worker (pid %d) exited with %s; restarting",
                worker.kind,
                worker.process.pid,
                worker.process.returncode,
            )
            self.workers.remove(worker)
            restarted.append(self.spawn(worker.kind, wrapper=worker.wrapper, env=worker.env))
        return restarted

    def supervise_redis(self) -> bool:
        """Restart the embedded redis-server if it died (used by `omnibind up`'s supervision).

        A dead server is reaped and started again on the same port and data dir (workers
        reconnect to the same URL; the AOF brings the data back), waiting
        `redis_restart_backoff_s[i]` before attempt i. Returns True when it restarted it,
        False when it is running or not ours (an external or reused Redis). Raises
        `StackError` with the last failure when no attempt brought it back.
        """
        server = self.redis
        code = server.exit_code() if server is not None else None
        if server is None or code is None:
            return False
        log.warning(
            "the embedded redis-server (pid %s, port %d) died with exit code %d; restarting it",
            server.pid,
            server.port,
            code,
        )
        failure: EmbeddedRedisError | None = None
        for attempt, wait_s in enumerate(self.redis_restart_backoff_s, 1):
            time.sleep(wait_s)
            try:
                server.restart()
            except EmbeddedRedisError as exc:
                failure = exc
                log.warning("restart %d of %d failed: %s", attempt, len(self.redis_restart_backoff_s), exc)
                continue
            log.warning(
                "the embedded redis-server was restarted on port %d (pid %s, attempt %d); its data was reloaded from "
                "the AOF in %s",
                server.port,
                server.pid,
                attempt,
                server.data_dir,
            )
            return True
        raise StackError(
            f"the embedded redis-server died (exit code {code}) and did not come back after "
            f"{len(self.redis_restart_backoff_s)} restarts; stopping. Last failure: {failure}"
        )

    def stop(self) -> None:
        """Warm-stop every worker (SIGTERM, then SIGKILL after `stop_timeout_s`), then Redis."""
        workers, self.workers = self.workers, []
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            code = stop_process(worker.process, timeout_s=self.stop_timeout_s)
            log.info("%s worker (pid %d) stopped with code %s", worker.kind, worker.process.pid, code)
            _kill_group_leftovers(worker.process.pid)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        self._started = False


def _kill_group_leftovers(pgid: int) -> None:
    """A prefork worker's children share its process group; none may outlive it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
