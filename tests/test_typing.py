"""The packages type-check: mypy, configured by pyproject.toml's [tool.mypy] (the packages
`make lint` checks), run from this venv on the real tree, so `make test` and CI enforce it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_packages_type_check() -> None:
    mypy = Path(sys.executable).with_name("mypy")
    assert mypy.exists(), "mypy is not installed: pip install -e '.[test]'"
    result = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout
