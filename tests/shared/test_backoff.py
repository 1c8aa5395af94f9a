from __future__ import annotations

import pytest

from shared.backoff import exponential_s, full_jitter_s, poll


def test_the_wait_doubles_per_failure_up_to_the_cap() -> None:
    assert [exponential_s(attempt, 0.5, 5.0) for attempt in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("attempt", [0, -3])
def test_an_attempt_before_the_first_failure_waits_the_base(attempt: int) -> None:
    assert exponential_s(attempt, 0.5, 5.0) == 0.5


def test_a_huge_attempt_count_stays_finite_and_capped() -> None:
    assert exponential_s(10**6, 1.0, 60.0) == 60.0


def test_full_jitter_spreads_waits_over_the_whole_window() -> None:
    waits = [full_jitter_s(3, 1.0, 60.0) for _ in range(400)]
    assert all(0.0 <= wait <= 4.0 for wait in waits)
    # Spread, not one value: both halves of the window are used.
    assert min(waits) < 1.0 < 3.0 < max(waits)


def test_poll_returns_the_first_answer_and_asks_no_more() -> None:
    answers = iter([None, None, "ready", "again"])
    calls: list[int] = []

    def check() -> str | None:
        calls.append(1)
        return next(answers)

    assert poll(check, timeout_s=60.0, interval_s=0.001) == "ready"
    assert len(calls) == 3


def test_poll_asks_once_and_gives_up_when_the_deadline_has_passed() -> None:
    calls: list[int] = []

    def never() -> None:
        calls.append(1)

    assert poll(never, timeout_s=0.0, interval_s=0.001) is None
    assert calls == [1]


def test_poll_keeps_asking_until_the_deadline_then_gives_up() -> None:
    calls: list[int] = []

    def never() -> None:
        calls.append(1)

    assert poll(never, timeout_s=0.05, interval_s=0.001, jitter=3.0) is None
    assert len(calls) >= 2


def test_what_the_check_raises_passes_through() -> None:
    def broken() -> None:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="the server exited"):
        poll(broken, timeout_s=60.0, interval_s=0.001)
