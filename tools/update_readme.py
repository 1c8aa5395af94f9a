"""Regenerate the configuration table of docs/configuration.md from the Settings model (the
README links to it). Run after changing a setting: tests/test_configuration_doc.py checks it."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config_reference import markdown_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
TABLE = re.compile(r"(<!-- settings-table:start[^>]*-->\n).*?(<!-- settings-table:end -->)", re.S)

if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    DOC.write_text(TABLE.sub(lambda m: m.group(1) + markdown_table() + "\n" + m.group(2), text), encoding="utf-8")
    print(f"updated {DOC}")
