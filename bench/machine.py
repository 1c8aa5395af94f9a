"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    with contextlib.suppress(OSError, StopIteration):
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
    """CPU, cores, RAM, the load average when the run began (other jobs skew CPU numbers),
    and the Python version."""
    import psutil  # (not in the reference venv that model_throughput.py may run in)

    return {
        "cpu": cpu_name(),
        "cores": psutil.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in psutil.getloadavg()],
        "python": platform.python_version(),
    }
