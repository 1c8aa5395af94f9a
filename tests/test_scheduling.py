"""The schedule of `make test` (tests/support/scheduling.py): every chaos module exists and
carries the `chaos` marker, the parallel part runs the whole-stack modules first, and the
Makefile runs the chaos modules by themselves after the parallel part."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.support.scheduling import CHAOS_MODULES, schedule_rank

ROOT = Path(__file__).resolve().parents[1]


def test_every_chaos_module_exists() -> None:
    for module in CHAOS_MODULES:
        assert (ROOT / module).is_file(), module


def collected(*args: str) -> list[str]:
    """The node ids `pytest --collect-only ARGS` lists."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in run.stdout.splitlines() if "::" in line]


def collected_modules(marker: str) -> set[str]:
    return {nodeid.split("::", 1)[0] for nodeid in collected("-m", marker, "tests/robustness", "tests/integration")}


def test_the_chaos_marker_selects_exactly_the_chaos_modules() -> None:
    assert collected_modules("chaos") == CHAOS_MODULES
    assert not collected_modules("not chaos") & CHAOS_MODULES


def test_whole_stack_modules_are_handed_out_first() -> None:
    assert schedule_rank("tests/integration/test_up.py::t") < schedule_rank("tests/shared/test_wire.py::t")
    assert schedule_rank("tests/robustness/test_poison.py::t") < schedule_rank("tests/http/test_console.py::t")


def test_make_test_runs_the_parallel_part_then_the_chaos_modules_alone() -> None:
    recipe = (ROOT / "Makefile").read_text(encoding="utf-8")
    parallel = re.search(r'pytest -n \$\(TEST_WORKERS\) --dist loadscope --no-loadscope-reorder -m "not chaos"', recipe)
    alone = re.search(r"pytest -m chaos \$\(ARGS\)", recipe)
    assert parallel and alone and parallel.start() < alone.start()


def test_every_test_has_a_node_id_of_its_own() -> None:
    # pytest-xdist schedules by node id: of several tests sharing one, it runs one and drops
    # the rest without a word (it did so to 18 schemathesis operations).
    ids = collected("tests")
    assert len(ids) > 1000
    assert not [nodeid for nodeid, count in Counter(ids).items() if count > 1]
