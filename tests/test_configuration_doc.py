"""docs/configuration.md's settings table is generated from the Settings model and kept in
sync (`python tools/update_readme.py`)."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config_reference import env_reference, markdown_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
TABLE = re.compile(r"<!-- settings-table:start[^>]*-->\n(.*?)<!-- settings-table:end -->", re.S)


def test_configuration_doc_lists_every_setting_exactly_as_generated() -> None:
    match = TABLE.search(DOC.read_text(encoding="utf-8"))
    assert match, "settings table markers missing"
    assert match.group(1).strip() == markdown_table(), "run `python tools/update_readme.py`"
    for var in env_reference():
        assert f"`{var.name}`" in match.group(1)
