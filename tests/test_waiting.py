"""The one wait of the tests (tests/support/waiting.py) and the rules that keep it the only
one: no test module rolls its own loop against a deadline, and every fixed sleep left in the
tests says why it is not a wait in disguise."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from tests.support.waiting import WaitTimeout, wait_until

TESTS = Path(__file__).resolve().parent
HELPER = TESTS / "support" / "waiting.py"
# Deadline loops that are not a poll for a condition, each with why.
OWN_LOOPS = {
    # Blocks on a threading.Condition that each arrival notifies: woken at once, no polling.
    TESTS / "support" / "http_receiver.py",
}
SLEEP = "time." + "sleep("  # spelt in two so that this file does not match itself


def test_wait_until_returns_the_first_truthy_value_of_the_check() -> None:
    counter = itertools.count()
    assert wait_until(lambda: [n] if (n := next(counter)) >= 3 else [], timeout_s=30, what="three", poll_s=0) == [3]


def test_wait_until_names_what_it_waited_for_and_the_last_value_seen() -> None:
    queue = ["stuck"]
    with pytest.raises(WaitTimeout, match=r"waiting for the queue to drain; last seen: False"):
        wait_until(lambda: not queue, timeout_s=0.05, what="the queue to drain")


def test_a_wait_that_times_out_is_an_assertion_and_reads_its_description_only_then() -> None:
    read: list[str] = []

    def log_tail() -> str:
        read.append("tail")
        return "the log's tail"

    assert wait_until(lambda: "up", timeout_s=1, what=log_tail) == "up"
    assert read == []
    with pytest.raises(AssertionError, match="the log's tail; last seen: 0"):
        wait_until(lambda: 0, timeout_s=0, what=log_tail)
    assert read == ["tail"]


def test_what_the_check_raises_ends_the_wait_at_once() -> None:
    def exited() -> bool:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(exited, timeout_s=60, what="the server to answer")


def deadline_loops(source: str) -> list[int]:
    """Lines of the `while` loops that read a deadline (a name set to `time.monotonic() + …`):
    a hand-rolled wait."""
    tree = ast.parse(source)

    def reads_clock(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "monotonic"
            for n in ast.walk(node)
        )

    deadlines = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp) and reads_clock(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return [
        loop.lineno
        for loop in ast.walk(tree)
        if isinstance(loop, ast.While) and any(isinstance(n, ast.Name) and n.id in deadlines for n in ast.walk(loop))
    ]


def test_the_scan_finds_a_hand_rolled_deadline_loop() -> None:
    source = (
        "import time\n"
        "def wait(done):\n"
        "    deadline = time.monotonic() + 5\n"
        "    while not done():\n"
        "        assert time.monotonic() < deadline\n"
        "        pass\n"
        "def pace():\n"
        "    started = time.monotonic()\n"
        "    while True:\n"
        "        print(time.monotonic() - started)\n"
    )
    assert deadline_loops(source) == [4]


def test_no_test_module_rolls_its_own_wait() -> None:
    found = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != HELPER and path not in OWN_LOOPS
        for line in deadline_loops(path.read_text())
    ]
    assert found == [], "wait with tests.support.waiting.wait_until instead"


def test_every_fixed_sleep_in_the_tests_says_why() -> None:
    """A sleep lets real time pass on purpose (a TTL, an outage, a pace, slowness inside a
    task); one that hopes something happened meanwhile is a wait_until on that thing."""
    silent = []
    for path in sorted(TESTS.rglob("*.py")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            said = "#" in line or (number > 1 and lines[number - 2].lstrip().startswith("#"))
            if SLEEP in line and not said:
                silent.append(f"{path.relative_to(TESTS.parent)}:{number}: {line.strip()}")
    assert silent == [], "say in a comment why the time must pass"
