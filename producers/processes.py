"""Child-process helpers for the services omnibind starts itself (redis-server, workers)."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the child when its parent dies (None elsewhere),
    so a killed supervisor leaves no orphans behind.

    The libc handle is resolved here, before fork, so the child only makes one syscall.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return hook


def stop_process(process: subprocess.Popen[bytes], *, timeout_s: float, sig: int = signal.SIGTERM) -> int:
    """Send `sig`, wait up to `timeout_s`, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
