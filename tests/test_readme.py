"""The README's configuration table is generated from the Settings model and kept in sync."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config_reference import env_reference, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE = re.compile(r"<!-- settings-table:start[^>]*-->\n(.*?)<!-- settings-table:end -->", re.S)


def test_readme_lists_every_setting_exactly_as_generated() -> None:
    match = TABLE.search(README.read_text(encoding="utf-8"))
    assert match, "settings table markers missing"
    assert match.group(1).strip() == markdown_table(), "run `python tools/update_readme.py`"
    for var in env_reference():
        assert f"`{var.name}`" in match.group(1)


def test_readme_names_the_two_commands_ci_uses() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    assert "exec make test" in (README.parent / ".ci" / "run").read_text()
