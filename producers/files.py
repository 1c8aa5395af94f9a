"""Finding the files to ingest (pure but for reading directories)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under `paths` (files as given, folders recursively, sorted), skipping
    hidden files and folders (editor swap files, .git, .DS_Store)."""
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
