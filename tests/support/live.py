"""Running the real MinIO and Weaviate servers (built by `make servers`) in tests.

`require_binary(server)` finds a built binary or ends the test: skipped, with the reason and
the fix, where there is no Go toolchain; *failed* where Go is present but the binary is
missing and ``CI=true`` (CI must run the live suites, never skip them quietly).

`ServerProcess` runs one server on fixed loopback ports chosen at construction, so that it
can be killed and started again at the same address on the same data dir (the chaos tests
do exactly that).
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from shared.backoff import poll
from tools.servers import GoServer, built, go_toolchain

_POLL_S = 0.1


def live_tests_required() -> bool:
    """True where a skipped live test is a failure: in CI, on a machine with Go."""
    return os.environ.get("CI", "").lower() == "true" and go_toolchain() is not None


def require_binary(server: GoServer) -> Path:
    """The built binary of `server`, or skip (no Go) / fail (Go present) the calling test."""
    found = built(server)
    if found is not None:
        return found
    if go_toolchain() is None:
        pytest.skip(f"live {server.name} tests need Go (>= 1.26) to build the server; install Go, run `make servers`")
    message = f"{server.name} is not built ({server.spec}); run `make servers` (`make test` does it)"
    if live_tests_required():
        pytest.fail(message)
    pytest.skip(message)


class ServerProcess:
    """A server process on fixed ports: `start` waits until `ready_url` answers 200, `stop`
    terminates it (or kills it with ``kill=True``), `start` again reuses ports and data."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        ready_url: str,
        log_dir: Path,
        *,
        startup_timeout_s: float = 180.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.ready_url = ready_url
        self.log_dir = log_dir
        self.startup_timeout_s = startup_timeout_s
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not self._wait_ready():
            tail = self.log_path.read_bytes()[-4000:].decode(errors="replace")
            self.stop(kill=True)
            raise RuntimeError(f"{self.name} did not become ready at {self.ready_url}:\n{tail}")

    def stop(self, *, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_ready(self) -> bool:
        return poll(self._ready_or_exited, timeout_s=self.startup_timeout_s, interval_s=_POLL_S) is True

    def _ready_or_exited(self) -> bool | None:
        """True once it answers its ready URL, False once it exited, None until either."""
        if self._process is None or self._process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2.0) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass  # not listening (or not ready) yet
        return None
