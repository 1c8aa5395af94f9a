from __future__ import annotations

import threading

import pytest

from producers.bridge.runner import retry_delay_s, run_consumers
from shared.errors import ConfigError, TransientError


class Scripted:
    """A consumer whose polls raise the scripted errors, then ask everything to stop."""

    def __init__(self, name: str, errors: list[Exception]) -> None:
        self.name = name
        self.errors = errors
        self.polls = 0
        self.done = threading.Event()

    def start(self) -> None:
        pass

    def poll(self) -> int:
        self.polls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()
        return 0


def test_transient_failures_are_retried_until_the_consumer_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("producers.bridge.runner.retry_delay_s", lambda failures: 0.01)
    consumer = Scripted("flaky", [TransientError("redis down"), TransientError("still down")])

    run_consumers([consumer], consumer.done.is_set, threading.Event())

    assert consumer.errors == [] and consumer.done.is_set()


def test_a_config_error_stops_every_consumer_and_is_raised() -> None:
    broken = Scripted("broken", [ConfigError("wrong password")])
    healthy = Scripted("healthy", [])
    healthy.done = threading.Event()  # never done on its own: only the failure stops it

    with pytest.raises(ConfigError, match="wrong password"):
        run_consumers([broken, healthy], lambda: False, threading.Event())


def test_retry_delays_grow_exponentially_to_a_cap() -> None:
    assert [retry_delay_s(n, 0.5, 4.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
