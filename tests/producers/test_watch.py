from __future__ import annotations

import os
from pathlib import Path

from producers.files import iter_files
from producers.watch import FolderWatcher


def test_existing_files_are_ignored_unless_asked_for(tmp_path: Path) -> None:
    (tmp_path / "old.jpg").write_bytes(b"x")
    assert FolderWatcher(tmp_path).scan() == []
    watcher = FolderWatcher(tmp_path, include_existing=True)
    assert watcher.scan() == []  # first sighting: not yet known to be complete
    assert watcher.scan() == [tmp_path / "old.jpg"]


def test_a_new_file_is_reported_once_after_it_stopped_changing(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    growing = tmp_path / "sub" / "clip.wav"
    growing.parent.mkdir()
    growing.write_bytes(b"a")
    assert watcher.scan() == []
    with growing.open("ab") as out:  # still being copied in
        out.write(b"more")
    os.utime(growing, ns=(1, 2))
    assert watcher.scan() == []
    assert watcher.scan() == [growing]
    assert watcher.scan() == []


def test_a_file_deleted_and_recreated_counts_as_new(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    path = tmp_path / "a.txt"
    path.write_text("one")
    watcher.scan()
    assert watcher.scan() == [path]
    path.unlink()
    watcher.scan()
    path.write_text("two!")
    watcher.scan()
    assert watcher.scan() == [path]


def test_iter_files_walks_folders_sorted_and_skips_hidden_entries(tmp_path: Path) -> None:
    for name in ["b.png", "a.png", ".DS_Store", ".git/config", "d/c.wav"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_files([tmp_path])] == ["a.png", "b.png", "d/c.wav"]
