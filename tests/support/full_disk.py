"""A real redis-server whose disk can be filled and freed at will, without root.

The server is started with SIGXFSZ ignored; `fill_disk` lowers its file-size limit
(RLIMIT_FSIZE, set on the running process with prlimit) to the AOF's current size, so the
next AOF write comes up short exactly as on a full volume: Redis logs "Short write while
writing to the AOF file", reports ``aof_last_write_status:err`` and refuses every write (and
PING) with ``MISCONF Errors writing to the AOF file: No space left on device``. `free_disk`
lifts the limit again, as an operator freeing space would. (A size-limited tmpfs would need
root to mount; this needs none and exercises the same code path of the server.)
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from producers.embedded_redis import EmbeddedRedis


class FullDiskRedis(EmbeddedRedis):
    """`EmbeddedRedis` (the embedded config, AOF on) whose AOF volume can run full."""

    def _child_setup(self) -> Callable[[], None] | None:
        parent_setup = super()._child_setup()

        def setup() -> None:
            if parent_setup is not None:
                parent_setup()
            # Ignored dispositions survive exec: a write past the limit fails with EFBIG
            # (which Redis reports as a full disk) instead of killing the server.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        return setup

    def aof_path(self) -> Path:
        return self.data_dir / "appendonly.aof"

    def fill_disk(self) -> None:
        """From now on the AOF cannot grow by a byte."""
        assert self.pid is not None
        limit = self.aof_path().stat().st_size
        psutil.Process(self.pid).rlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    def free_disk(self) -> None:
        if self.pid is None:  # stopped
            return
        psutil.Process(self.pid).rlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def aof_write_failing(self) -> bool:
        """True once the server has failed an AOF write (and refuses writes)."""
        probe = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            return probe.info("persistence")["aof_last_write_status"] == "err"
        finally:
            probe.close()


def start_full_disk_redis(base_dir: Path) -> FullDiskRedis:
    return FullDiskRedis(base_dir / "redis-full-disk", port=0, start_timeout_s=30.0).start()


@pytest.fixture
def full_disk_redis(tmp_path: Path) -> Iterator[FullDiskRedis]:
    """A `FullDiskRedis` for this test (disk freed and server stopped after it)."""
    server = start_full_disk_redis(tmp_path)
    try:
        yield server
    finally:
        server.free_disk()
        server.stop()
