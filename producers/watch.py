"""`omnibind watch`: polling folder watcher (portable: no inotify, works on network mounts)."""

from __future__ import annotations

from pathlib import Path

from producers.files import iter_files

Signature = tuple[int, int]  # size, mtime_ns


class FolderWatcher:
    """Reports each new file once, after it stopped changing between two scans (so a file
    still being copied in is not ingested half-written)."""

    def __init__(self, directory: Path, *, include_existing: bool = False) -> None:
        self.directory = directory
        self._last: dict[Path, Signature] = {}
        self._taken: set[Path] = set()
        if not include_existing:
            self._taken = set(self._snapshot())

    def _snapshot(self) -> dict[Path, Signature]:
        snapshot = {}
        for path in iter_files([self.directory]):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed between listing and stat
            snapshot[path] = (stat.st_size, stat.st_mtime_ns)
        return snapshot

    def scan(self) -> list[Path]:
        """New files that are complete since the previous scan, oldest scan order."""
        current = self._snapshot()
        ready = [
            path for path, signature in current.items() if path not in self._taken and self._last.get(path) == signature
        ]
        self._taken.update(ready)
        self._taken &= current.keys() | set(ready)  # forget deleted files: a new file of that name is new
        self._last = current
        return ready
