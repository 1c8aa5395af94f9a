"""How many CPUs this process may use: what decides the default number of cpu worker processes.

Inside a container `os.cpu_count()` reports the host's cores, not the container's share: a
cpu worker limited to 2 CPUs (compose ``cpus: 2``) on a 64-core host would fork 64 processes
that the CPU quota then throttles, each holding a message and its decoded upload in memory.
The share is the cgroup CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``) and the CPU affinity (``taskset``, ``--cpuset-cpus``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 mounts the cpu controller alone or together with cpuacct.
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct")


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP, affinity: int | None = None
) -> int:
    """CPUs this process may use, at least 1: the CPU quota rounded up (1.5 CPUs -> 2),
    capped by `affinity`, the number of CPUs the process may run on (default: its own, from
    ``os.sched_getaffinity``). Reads the cgroup files under `cgroup_root` for the cgroups
    named in `self_cgroup` (``/proc/self/cgroup`` format); raises nothing."""
    cpus = affinity if affinity is not None else _affinity_count()
    quota = cpu_quota(cgroup_root, self_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """CPUs the tightest CPU quota allows (1.5 for ``cpus: 1.5``) over this process's cgroup
    and the cgroups above it, in cgroup v2 or v1 layout; None when no quota applies or no
    cgroup files can be read.

    A container with its own cgroup namespace sees its cgroup at `cgroup_root` itself (and
    ``/`` in `self_cgroup`); without one (cgroup v1, or ``cgroupns: host``) it sees the host's
    tree, where `self_cgroup` names its cgroup."""
    v2_path, v1_path = _own_cgroups(self_cgroup)
    quotas = [_v2_quota(folder) for folder in _with_ancestors(cgroup_root, v2_path)]
    for name in _V1_CPU_DIRS:
        quotas += [_v1_quota(folder) for folder in _with_ancestors(cgroup_root / name, v1_path)]
    return min((quota for quota in quotas if quota is not None), default=None)


def _affinity_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _own_cgroups(self_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup paths (v2, v1 cpu controller) from lines such as ``0::/a/b``
    and ``4:cpu,cpuacct:/docker/abc``; ``/`` for what is not listed."""
    v2_path = v1_path = "/"
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return v2_path, v1_path
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            v2_path = path or "/"
        elif "cpu" in controllers.split(","):
            v1_path = path or "/"
    return v2_path, v1_path


def _with_ancestors(hierarchy: Path, cgroup: str) -> list[Path]:
    """The folders of `cgroup` and of every cgroup above it up to `hierarchy`, those that
    exist: a quota set on a parent (a Kubernetes pod, a systemd slice) binds its children."""
    parts = [part for part in cgroup.split("/") if part and part != ".."]
    folders = [hierarchy.joinpath(*parts[:depth]) for depth in range(len(parts) + 1)]
    return [folder for folder in folders if folder.is_dir()]


def _v2_quota(folder: Path) -> float | None:
    """``cpu.max`` holds ``"$QUOTA $PERIOD"`` in µs, or ``"max $PERIOD"`` for no quota."""
    text = _read(folder / "cpu.max")
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` is ``-1`` for no quota."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota, period)


def _ratio(quota_us: str, period_us: str) -> float | None:
    try:
        quota, period = int(quota_us), int(period_us)
    except ValueError:
        return None  # not a quota we understand: decide by affinity alone
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
