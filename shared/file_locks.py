"""File locks, shared by every process and thread on one host: the one home of omnibind's
`flock(2)` use (the vector store's writers and maintenance, the local object store's key
stripes, the checkpoint download).

`flock(2)` locks belong to an open file description: each call opens the file anew, so two
threads of one process exclude each other just like two processes do, and the kernel drops
the lock when its holder dies (no stale lock files after a crash or kill -9). Works on local
file systems and Docker volumes; NFS support depends on the client.

Why not the `filelock` package (installed through other dependencies): two of the uses need
what it does not offer in this form — shared (reader) locks beside exclusive ones on a hot
path (its `ReadWriteLock` is built on SQLite), and a held lock handed to a child process by
passing it the descriptor (`try_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from shared.backoff import poll


class LockTimeout(Exception):
    """The lock stayed held by someone else for longer than the timeout."""


@contextlib.contextmanager
def exclusive_lock(path: Path, *, timeout_s: float, poll_s: float = 0.005) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the body of the `with`.

    Polls with jitter rather than blocking so that the wait is bounded; raises
    `LockTimeout` after `timeout_s`.
    """
    with open(path, "a+b") as handle:

        def locked() -> bool | None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return True

        # Jitter keeps waiting writers from waking in lockstep.
        if poll(locked, timeout_s=timeout_s, interval_s=poll_s, jitter=3.0) is None:
            raise LockTimeout(f"{path} stayed locked for more than {timeout_s:g} s")
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def blocking_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold a lock on `path` (created if missing) for the body of the `with`, waiting as long
    as it takes: exclusive, or `shared` with other shared holders (readers that must not see
    a writer's half-done work). Raises `OSError` when the file cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def try_lock(path: Path) -> BinaryIO | None:
    """The open file of `path` (created if missing) holding an exclusive lock, or None if
    someone else holds it. Closing the file releases the lock, unless a child process
    inherited the descriptor (``pass_fds``): then the lock stays held until the child exits
    too, which is how a lock is handed to a child process."""
    handle = open(path, "a+b")  # noqa: SIM115  (returned to the caller, who closes it)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    return handle
