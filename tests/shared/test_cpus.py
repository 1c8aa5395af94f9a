"""The CPUs a worker may use, read from cgroup files laid out as the kernel lays them out."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from shared.cpus import available_cpus, cpu_quota


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def cgroup_v2(root: Path, cpu_max: str, cgroup: str = "/") -> Path:
    """A cgroup v2 mount as a container with its own cgroup namespace sees it (`cgroup` "/"),
    or the host's tree with the process in `cgroup`; returns the /proc/self/cgroup file."""
    write(root / "cgroup.controllers", "cpuset cpu io memory pids")
    write(root / cgroup.lstrip("/") / "cpu.max", cpu_max)
    self_cgroup = root.parent / "self-cgroup"
    write(self_cgroup, f"0::{cgroup}")
    return self_cgroup


def cgroup_v1(root: Path, quota_us: str, period_us: str = "100000") -> Path:
    """A cgroup v1 mount as Docker gives a container: its own cgroup at the controller's root,
    while /proc/self/cgroup names the host path."""
    controller = root / "cpu,cpuacct"
    write(controller / "cpu.cfs_quota_us", quota_us)
    write(controller / "cpu.cfs_period_us", period_us)
    write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    self_cgroup = root.parent / "self-cgroup"
    write(self_cgroup, "12:memory:/docker/0123abcd\n4:cpu,cpuacct:/docker/0123abcd\n0::/")
    return self_cgroup


@pytest.mark.parametrize(("cpu_max", "expected"), [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1)])
def test_a_cgroup_v2_quota_rounds_up_to_whole_cpus(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root = tmp_path / "cgroup"
    self_cgroup = cgroup_v2(root, cpu_max)
    assert available_cpus(root, self_cgroup, affinity=64) == expected


def test_cgroup_v2_without_a_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    self_cgroup = cgroup_v2(root, "max 100000")
    assert cpu_quota(root, self_cgroup) is None
    assert available_cpus(root, self_cgroup, affinity=6) == 6


def test_the_affinity_caps_a_larger_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    self_cgroup = cgroup_v2(root, "800000 100000")
    assert available_cpus(root, self_cgroup, affinity=3) == 3


def test_a_quota_on_a_parent_cgroup_binds_the_process_in_the_host_tree(tmp_path: Path) -> None:
    """Without a cgroup namespace (``cgroupns: host``, a Kubernetes pod's slice) the quota may
    sit on the process's cgroup or any cgroup above it; the tightest wins."""
    root = tmp_path / "cgroup"
    cgroup = "/kubepods.slice/pod1/container2"
    self_cgroup = cgroup_v2(root, "max 100000", cgroup)
    write(root / "kubepods.slice" / "pod1" / "cpu.max", "250000 100000")
    write(root / "kubepods.slice" / "cpu.max", "1600000 100000")
    assert cpu_quota(root, self_cgroup) == 2.5
    assert available_cpus(root, self_cgroup, affinity=64) == 3


def test_a_cgroup_v1_quota_is_quota_over_period(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    self_cgroup = cgroup_v1(root, "300000", "100000")
    assert cpu_quota(root, self_cgroup) == 3.0
    assert available_cpus(root, self_cgroup, affinity=64) == 3


def test_cgroup_v1_without_a_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    self_cgroup = cgroup_v1(root, "-1")
    assert cpu_quota(root, self_cgroup) is None
    assert available_cpus(root, self_cgroup, affinity=5) == 5


def test_without_cgroup_files_the_affinity_decides(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "absent", tmp_path / "absent-self") is None
    assert available_cpus(tmp_path / "absent", tmp_path / "absent-self", affinity=4) == 4


def test_an_unreadable_quota_is_ignored_rather_than_fatal(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    self_cgroup = cgroup_v2(root, "garbage")
    assert available_cpus(root, self_cgroup, affinity=2) == 2


def test_this_machine_answers_between_one_and_its_usable_cores() -> None:
    usable = len(os.sched_getaffinity(0))
    cpus = available_cpus()
    assert 1 <= cpus <= usable <= (os.cpu_count() or usable)
    quota = cpu_quota()
    if quota is not None:
        assert cpus <= max(1, math.ceil(quota))
