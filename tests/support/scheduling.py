"""How `make test` spreads the suite over pytest-xdist workers (``-n N --dist loadscope``).

A test module is one unit of work: its tests run in one worker, in order, so a module-scoped
fixture (a running stack, a browser, a loaded model) is built once, as in a serial run.
Workers take ``tests/robustness`` and ``tests/integration`` first (the longest units), then
the rest, so a run ends with short tests filling the gaps.

The whole-stack chaos modules (kill -9 of workers and servers, a partition, a failover, a
full disk, a storage outage) carry the ``chaos`` marker and are not part of that: `make
test` runs them afterwards, one at a time in one process (``-m chaos``). Their waits are
sized for a machine doing only them; beside three other workers on two cores, consumers took
longer than 90 s to reconnect after a partition and an upload ran out its task time limit
(docs/development.md).

(xdist's own ``xdist_group`` marker cannot group modules here: ``--dist loadgroup`` renames
``item._nodeid``, which pytest 9.2 no longer reads, so the groups are silently ignored.)
Without xdist nothing here changes what runs or in which order.
"""

from __future__ import annotations

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

CHAOS_MODULES = frozenset(
    {
        "tests/robustness/test_production_chaos.py",
        "tests/robustness/test_delivery.py",
        "tests/integration/test_reindex.py",
        "tests/robustness/test_clock_skew.py",
        "tests/robustness/test_partition.py",
        "tests/robustness/test_chaos.py",
        "tests/robustness/test_sentinel_failover.py",
        "tests/robustness/test_deletions.py",
        "tests/robustness/test_redis_disk_full.py",
        "tests/robustness/test_storage_outage.py",
    }
)
LONG_FIRST = ("tests/robustness/", "tests/integration/")


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def schedule_rank(nodeid: str) -> int:
    return 0 if module_of(nodeid).startswith(LONG_FIRST) else 1


class ModuleScheduling(LoadScopeScheduling):
    """xdist's loadscope with whole modules as units of work (not classes)."""

    def _split_scope(self, nodeid: str) -> str:
        return module_of(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> ModuleScheduling | None:
    return ModuleScheduling(config, log) if config.getvalue("dist") == "loadscope" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if module_of(item.nodeid) in CHAOS_MODULES:
            item.add_marker(pytest.mark.chaos)
    # The controller hands out units in the order a worker collected them (with
    # --no-loadscope-reorder); a serial run keeps pytest's order.
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: schedule_rank(item.nodeid))  # stable within a rank
