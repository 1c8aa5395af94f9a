"""Default directories, after the XDG base-directory variables."""

from __future__ import annotations

import os
from pathlib import Path


def xdg_dir(var: str, fallback: str) -> Path:
    """``$var/omnibind``, or ``~/fallback/omnibind`` when `var` is unset or empty."""
    return Path(os.environ.get(var) or Path.home() / fallback) / "omnibind"
