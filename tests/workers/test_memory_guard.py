"""The memory guard kills the process that crosses its limit, like an OOM kill would."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from workers.memory_guard import MemoryGuard, start_memory_guard

HOG = textwrap.dedent(
    """
    import sys, time
    import psutil
    from workers.memory_guard import MIB, start_memory_guard
    headroom_mb = int(sys.argv[1])
    start_memory_guard(psutil.Process().memory_info().rss // MIB + headroom_mb)
    print("guarded", flush=True)
    hog = bytearray(int(sys.argv[2]) * 1024 * 1024)  # touched: resident
    time.sleep(5)  # alive long enough for the guard's next look at its memory
    print("survived", flush=True)
    """
)


def test_a_process_over_its_limit_is_killed_with_sigkill() -> None:
    done = subprocess.run([sys.executable, "-c", HOG, "100", "300"], capture_output=True, text=True, timeout=60)

    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert "guarded" in done.stdout and "survived" not in done.stdout
    assert "over OMNIBIND_WORKER__MAX_CHILD_MEMORY_MB" in done.stderr


def test_a_process_under_its_limit_is_left_alone() -> None:
    quick = HOG.replace("time.sleep(5)", "time.sleep(0.3)")  # under its limit: no need to live long
    done = subprocess.run([sys.executable, "-c", quick, "400", "50"], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "survived" in done.stdout


def test_the_guard_reports_the_resident_size_it_saw() -> None:
    seen: list[int] = []
    fired = threading.Event()
    guard = MemoryGuard(1, interval_s=0.01, on_exceeded=lambda rss: (seen.append(rss), fired.set())).start()
    assert fired.wait(5)
    guard.stop()
    assert seen and seen[0] > 1


def test_no_limit_means_no_guard() -> None:
    assert start_memory_guard(0) is None
    with pytest.raises(ValueError):
        MemoryGuard(0)
