"""A hard memory bound for the processes that decode untrusted uploads.

Input limits (bytes, pixels, duration) catch what a header announces; a file can still make a
decoder allocate far more than expected. In a container the kernel's OOM killer would then
kill the whole worker — every process of it, mid-task. The guard does the same to the one
CPU pool process that crossed `max_child_memory_mb`, at once: a watcher thread reads the
process's resident memory every `interval_s` and SIGKILLs the process when it is over.

Nothing is lost by that: the prefork parent sees its child die and requeues the message
(``task_reject_on_worker_lost``), a fresh child takes its place, and an upload that kills its
worker on every delivery is dead-lettered as a poison message after
``OMNIBIND_WORKER__MAX_DELIVERIES`` attempts (`workers.stage`). Other uploads keep flowing.

The index worker gets a gentler bound (`start_recycling`): past ``OMNIBIND_INDEX__RECYCLE_RSS_MB``
it shuts down warm and its supervisor starts a fresh one (lancedb grows natively per write).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

import psutil

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.05
MIB = 1024 * 1024


class MemoryGuard:
    """Kills this process (or calls `on_exceeded`) when its RSS passes `max_rss_bytes`."""

    def __init__(
        self,
        max_rss_bytes: int,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        on_exceeded: Callable[[int], None] | None = None,
    ) -> None:
        if max_rss_bytes <= 0:
            raise ValueError("max_rss_bytes must be positive")
        self.max_rss_bytes = max_rss_bytes
        self.interval_s = interval_s
        self._on_exceeded = on_exceeded or _kill_self
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)

    def start(self) -> MemoryGuard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=max(1.0, 10 * self.interval_s))

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._process.memory_info().rss
            if rss > self.max_rss_bytes:
                self._on_exceeded(rss)
                return


def _kill_self(rss_bytes: int) -> None:
    log.critical(
        "pid %d uses %d MiB, over OMNIBIND_WORKER__MAX_CHILD_MEMORY_MB: killing it (its task will be redelivered)",
        os.getpid(),
        rss_bytes // MIB,
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def start_memory_guard(max_child_memory_mb: int) -> MemoryGuard | None:
    """Start a guard for this process when a limit is configured (> 0); None otherwise."""
    if max_child_memory_mb <= 0:
        return None
    return MemoryGuard(max_child_memory_mb * MIB).start()


# How often the index worker looks at its RSS: its growth is slow (tens of MB per 1,000 writes).
RECYCLE_INTERVAL_S = 5.0


def _finish_and_exit(rss_bytes: int) -> None:
    log.warning(
        "pid %d uses %d MiB, over OMNIBIND_INDEX__RECYCLE_RSS_MB: recycling (finishing its tasks, then exiting; "
        "the supervisor starts a fresh worker)",
        os.getpid(),
        rss_bytes // MIB,
    )
    # Celery's warm shutdown: stop consuming, let the running tasks finish and ack, exit 0.
    os.kill(os.getpid(), signal.SIGTERM)


def start_recycling(recycle_rss_mb: int) -> MemoryGuard | None:
    """The index worker's bound on lancedb's native growth (docs/vectors.md, "Memory"): past
    `recycle_rss_mb` the process shuts down warm, as `omnibind up` or compose stop it, and
    its supervisor (`Stack.restart_dead`, compose's ``restart: unless-stopped``) starts a
    fresh one. Nothing is lost: messages not yet taken stay in the queue. None when 0."""
    if recycle_rss_mb <= 0:
        return None
    return MemoryGuard(recycle_rss_mb * MIB, interval_s=RECYCLE_INTERVAL_S, on_exceeded=_finish_and_exit).start()
