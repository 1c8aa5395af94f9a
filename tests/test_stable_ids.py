"""pytest-xdist runs only when every worker collects the same test ids; a set's repr differs
between processes (string hash seeds), so parametrized ids are built with `stable_repr`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.vectors.records import SearchFilters
from tests.support.ids import stable_repr

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_stable_repr_sorts_the_members_of_sets_wherever_they_are() -> None:
    assert stable_repr(frozenset({"b", "a"})) == "frozenset({'a', 'b'})"
    assert stable_repr(({("z", 1), ("a", 2)}, 3)) == "({('a', 2), ('z', 1)}, 3)"
    assert stable_repr(SearchFilters(scope=frozenset({"nobody", "b"}))).startswith(
        "SearchFilters(scope=frozenset({'b', 'nobody'})"
    )


def test_the_parametrized_ids_are_the_same_under_any_hash_seed() -> None:
    def collected(seed: str) -> list[str]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/shared/vectors/test_contract.py",
                "tests/shared/vectors/test_weaviate.py",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        return [line for line in result.stdout.splitlines() if "::" in line]

    first = collected("1")
    assert any("frozenset({'a', 'b'})" in test_id for test_id in first)
    assert collected("2") == first == collected("3")
