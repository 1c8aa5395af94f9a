"""The xdist schedule of `make test` (tests/support/scheduling.py): each chaos lane names
modules that exist, lanes share none, and workers are handed the lanes first."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.scheduling import CHAOS_LANES, schedule_rank, unit_of

ROOT = Path(__file__).resolve().parents[1]


def test_every_lane_module_exists_and_is_in_one_lane_only() -> None:
    modules = [module for lane in CHAOS_LANES.values() for module in lane]
    assert len(modules) == len(set(modules))
    for module in modules:
        assert (ROOT / module).is_file(), module


def test_a_module_is_one_unit_and_a_lane_gathers_its_modules() -> None:
    assert unit_of("tests/workers/test_batcher.py::test_a") == unit_of("tests/workers/test_batcher.py::test_b[x::y]")
    assert unit_of("tests/workers/test_batcher.py::test_a") != unit_of("tests/workers/test_sweeper.py::test_a")
    for lane, modules in CHAOS_LANES.items():
        assert {unit_of(f"{module}::test_x") for module in modules} == {lane}


def test_lanes_come_first_interleaved_then_whole_stack_tests_then_the_rest() -> None:
    firsts = [schedule_rank(f"{modules[0]}::t") for modules in CHAOS_LANES.values()]
    assert sorted(firsts) == [(0, 0), (0, 1)]
    lane_rank = max(schedule_rank(f"{m}::t") for modules in CHAOS_LANES.values() for m in modules)
    assert lane_rank < schedule_rank("tests/integration/test_up.py::t") < schedule_rank("tests/shared/test_wire.py::t")


def test_make_test_runs_the_lane_scheduler() -> None:
    recipe = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pytest -n \$\(TEST_WORKERS\) --dist loadscope --no-loadscope-reorder", recipe)
