"""The one wait in the tests: poll a condition until it holds or a deadline passes. Tests wait
on what they mean to see (a record indexed, a process exited, a log line) rather than
sleeping a fixed time in the hope that it happened; tests/test_waiting.py keeps other
deadline loops out of the suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shared.backoff import poll

T = TypeVar("T")

# Room in a failure message for the last value seen; a log or a page can be long.
_LAST_CHARS = 2000


class WaitTimeout(AssertionError):
    """What a test waited for did not happen in time (a failed expectation, hence an
    AssertionError: pytest shows it as a test failure, not an error)."""


def wait_until(
    check: Callable[[], T | None], *, timeout_s: float, what: str | Callable[[], str], poll_s: float = 0.05
) -> T:
    """Call `check` every `poll_s` until it returns something truthy, and return that.
    After `timeout_s` raise `WaitTimeout` naming `what` and the last value `check` returned;
    `what` may be a function, called only then (a log tail read at the moment of failure).
    What `check` raises passes through: a check can fail at once (a process that exited)."""
    last: list[T | None] = []

    def truthy() -> T | None:
        value = check()
        last[:] = [value]
        return value if value else None

    found = poll(truthy, timeout_s=timeout_s, interval_s=poll_s)
    if found is not None:
        return found
    described = what() if callable(what) else what
    seen = repr(last[0])[-_LAST_CHARS:] if last else "nothing"
    raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {described}; last seen: {seen}")
