"""How `make test` spreads the suite over pytest-xdist workers (``-n N --dist loadscope``).

A test module is one unit of work: its tests run in one worker, in order, so a module-scoped
fixture (a running stack, a browser, a loaded model) is built once, as in a serial run. The
whole-stack chaos modules (kill -9 of workers and servers, a partition, a failover, a full
disk) are gathered into two lanes, each one unit: at most two of them share the machine at a
time, each beside lighter tests. Workers take the lanes first (the longest units), longest
module first within a lane, then ``tests/robustness`` and ``tests/integration``, then the
rest, so a run ends with short tests filling the gaps.

(xdist's own ``xdist_group`` marker cannot do this here: ``--dist loadgroup`` renames
``item._nodeid``, which pytest 9.2 no longer reads, so the groups are silently ignored.)
Without xdist nothing here changes what runs or in which order.
"""

from __future__ import annotations

from itertools import zip_longest

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

# Balanced by measured serial time (CI-shaped run at 65c157a: about 190 s per lane); longest
# first. A new whole-stack chaos module joins the shorter lane.
CHAOS_LANES: dict[str, tuple[str, ...]] = {
    "chaos-a": (
        "tests/robustness/test_production_chaos.py",  # 77 s
        "tests/robustness/test_delivery.py",  # 50 s
        "tests/integration/test_reindex.py",  # 49 s
        "tests/robustness/test_clock_skew.py",  # 10 s
    ),
    "chaos-b": (
        "tests/robustness/test_partition.py",  # 54 s
        "tests/robustness/test_chaos.py",  # 48 s
        "tests/robustness/test_sentinel_failover.py",  # 47 s
        "tests/robustness/test_deletions.py",  # 29 s
        "tests/robustness/test_redis_disk_full.py",  # 16 s
    ),
}
LONG_FIRST = ("tests/robustness/", "tests/integration/")

_LANE_OF = {module: lane for lane, modules in CHAOS_LANES.items() for module in modules}
# The lanes interleaved, so that each lane's first module is among the first units handed out.
_CHAOS_ORDER = [module for row in zip_longest(*CHAOS_LANES.values()) for module in row if module]


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its chaos lane, or else its module."""
    module = module_of(nodeid)
    return _LANE_OF.get(module, module)


def schedule_rank(nodeid: str) -> tuple[int, int]:
    module = module_of(nodeid)
    if module in _LANE_OF:
        return 0, _CHAOS_ORDER.index(module)
    return (1, 0) if module.startswith(LONG_FIRST) else (2, 0)


class LaneScheduling(LoadScopeScheduling):
    """xdist's loadscope with module scopes and the chaos lanes as units of work."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LaneScheduling | None:
    return LaneScheduling(config, log) if config.getvalue("dist") == "loadscope" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The controller hands out units in the order a worker collected them (with
    # --no-loadscope-reorder); a serial run keeps pytest's order.
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: schedule_rank(item.nodeid))  # stable within a rank
