"""How every benchmark leaves its results: `<stem>.json` (everything) beside `<stem>.md`
(the table people read), the Markdown also printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(stem: Path, report: dict[str, Any], markdown: str) -> None:
    """Write `stem`.json and `stem`.md (creating their folder) and print the Markdown."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_name(stem.name + ".md").write_text(markdown)
    print(markdown)
