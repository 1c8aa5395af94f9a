"""Regenerate the README's configuration table from the Settings model."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config_reference import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE = re.compile(r"(<!-- settings-table:start[^>]*-->\n).*?(<!-- settings-table:end -->)", re.S)

if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    README.write_text(TABLE.sub(lambda m: m.group(1) + markdown_table() + "\n" + m.group(2), text), encoding="utf-8")
    print(f"updated {README}")
