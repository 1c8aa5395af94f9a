"""What only the local directory adapter promises: its layout, containment and multi-process use."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.errors import InvalidKey, ObjectNotFound
from shared.events import ObjectRef
from shared.objects.local import META_DIR, TMP_DIR, LocalObjectStore

MakeStore = Callable[[], LocalObjectStore]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def local(make_local_store: MakeStore) -> LocalObjectStore:
    return make_local_store()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the store's root holding a file nobody may read through the store."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_bytes(b"do not leak")
    return directory


def test_objects_are_plain_files_under_root_bucket_key(local: LocalObjectStore) -> None:
    local.put("uploads", "img/cat.jpg", b"jpeg bytes")

    assert (local.root / "uploads" / "img" / "cat.jpg").read_bytes() == b"jpeg bytes"


def test_symlinked_directory_pointing_outside_the_bucket_is_refused(local: LocalObjectStore, outside: Path) -> None:
    local.ensure_bucket("uploads")
    (local.root / "uploads" / "link").symlink_to(outside, target_is_directory=True)
    ref = ObjectRef(bucket="uploads", key="link/secret.txt")

    with pytest.raises(InvalidKey):
        local.get(ref, max_bytes=100)
    with pytest.raises(InvalidKey):
        local.stat(ref)
    with pytest.raises(InvalidKey):
        local.put("uploads", "link/planted.txt", b"x")
    with pytest.raises(InvalidKey):
        local.delete(ref)
    assert sorted(path.name for path in outside.iterdir()) == ["secret.txt"]


def test_symlinked_file_pointing_outside_the_bucket_is_refused(local: LocalObjectStore, outside: Path) -> None:
    local.ensure_bucket("uploads")
    (local.root / "uploads" / "secret.txt").symlink_to(outside / "secret.txt")

    with pytest.raises(InvalidKey):
        local.get(ObjectRef(bucket="uploads", key="secret.txt"), max_bytes=100)
    with pytest.raises(InvalidKey):
        local.put("uploads", "secret.txt", b"overwrite")
    assert (outside / "secret.txt").read_bytes() == b"do not leak"


def test_symlinked_bucket_pointing_outside_the_root_is_refused(local: LocalObjectStore, outside: Path) -> None:
    local.root.mkdir(parents=True, exist_ok=True)
    (local.root / "uploads").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidKey):
        local.get(ObjectRef(bucket="uploads", key="secret.txt"), max_bytes=100)


def test_sidecar_tree_is_not_addressable(local: LocalObjectStore) -> None:
    local.put("uploads", "k", b"x", metadata={"tenant": "acme"})
    assert (local.root / META_DIR / "uploads" / "k").is_file()

    with pytest.raises(InvalidKey):
        local.get(ObjectRef(bucket=META_DIR, key="uploads/k"), max_bytes=1000)
    with pytest.raises(InvalidKey):
        local.get(ObjectRef(bucket="uploads", key=f"../{META_DIR}/uploads/k"), max_bytes=1000)
    with pytest.raises(ObjectNotFound):  # a key of that name is an ordinary, different object
        local.get(ObjectRef(bucket="uploads", key=f"{META_DIR}/uploads/k"), max_bytes=1000)


def test_no_temp_files_are_left_behind(local: LocalObjectStore) -> None:
    local.put("uploads", "a", b"x")
    with pytest.raises(InvalidKey):
        local.put("uploads", "a/b", b"clashes with the object 'a'")

    assert list((local.root / TMP_DIR).iterdir()) == []


def test_an_object_and_a_prefix_of_the_same_name_clash(local: LocalObjectStore) -> None:
    local.put("uploads", "name/child", b"x")

    with pytest.raises(InvalidKey, match="clashes"):
        local.put("uploads", "name", b"y")


def test_files_are_created_with_umask_permissions(local: LocalObjectStore) -> None:
    umask = os.umask(0)
    os.umask(umask)

    local.put("uploads", "k", b"x")

    assert (local.root / "uploads" / "k").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_placed_by_hand_is_served_with_its_md5(local: LocalObjectStore) -> None:
    local.ensure_bucket("uploads")
    (local.root / "uploads" / "dropped.bin").write_bytes(b"placed by hand")

    ref = local.stat(ObjectRef(bucket="uploads", key="dropped.bin"))

    assert (ref.etag, ref.size, ref.content_type) == (_md5(b"placed by hand"), 14, "application/octet-stream")


def test_a_file_replaced_by_hand_never_gets_the_stale_etag(local: LocalObjectStore) -> None:
    local.put("uploads", "k", b"original", content_type="text/plain")
    path = local.root / "uploads" / "k"
    replacement = path.with_name("replacement")
    replacement.write_bytes(b"replaced by hand")
    os.replace(replacement, path)

    assert local.stat(ObjectRef(bucket="uploads", key="k")).etag == _md5(b"replaced by hand")


def test_a_ref_naming_a_version_is_not_found(local: LocalObjectStore) -> None:
    ref = local.put("uploads", "k", b"x")
    versioned = ref.model_copy(update={"version_id": "v1"})

    with pytest.raises(ObjectNotFound, match="keeps no versions"):
        local.get(versioned, max_bytes=10)
    with pytest.raises(ObjectNotFound):
        local.stat(versioned)


def test_delete_prunes_directories_left_empty(local: LocalObjectStore) -> None:
    local.put("uploads", "a/b/c/d", b"x")
    local.put("uploads", "a/keep", b"y")

    local.delete(ObjectRef(bucket="uploads", key="a/b/c/d"))

    assert not (local.root / "uploads" / "a" / "b").exists()
    assert (local.root / "uploads" / "a" / "keep").is_file()
    assert not (local.root / META_DIR / "uploads" / "a" / "b").exists()


# -- several processes on one root ---------------------------------------------------------

_WRITERS = 4
_ROUNDS = 15
_PAYLOAD_BYTES = 64 * 1024


def _payload(writer: int) -> bytes:
    return bytes([writer]) * _PAYLOAD_BYTES


def _content_type(writer: int) -> str:
    return f"application/x-writer-{writer}"


def _write_many(root: str, writer: int) -> None:
    store = LocalObjectStore(Path(root))
    for _ in range(_ROUNDS):
        store.put("uploads", "contended/key", _payload(writer), content_type=_content_type(writer))


def _read_many(root: str) -> None:
    """Exit non-zero (an AssertionError in the child) on the first inconsistent read."""
    store = LocalObjectStore(Path(root))
    ref = ObjectRef(bucket="uploads", key="contended/key")
    whole = {_payload(writer) for writer in range(_WRITERS)}
    for _ in range(_ROUNDS * 2):
        data = store.get(ref, max_bytes=_PAYLOAD_BYTES)
        assert data in whole, f"partial or mixed read of {len(data)} bytes"
        info = store.head(ref)
        writer = int(str(info.ref.content_type).rsplit("-", 1)[1])
        assert info.ref.etag == _md5(_payload(writer)), f"one writer's sidecar with another's bytes: {info.ref}"


def test_processes_writing_one_key_never_expose_partial_or_mixed_objects(local: LocalObjectStore) -> None:
    local.put("uploads", "contended/key", _payload(0), content_type=_content_type(0))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, like a worker
    processes = [context.Process(target=_write_many, args=(str(local.root), w)) for w in range(_WRITERS)]
    processes += [context.Process(target=_read_many, args=(str(local.root),)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)

    assert [process.exitcode for process in processes] == [0] * len(processes)
    final = local.head(ObjectRef(bucket="uploads", key="contended/key"))
    data = local.get(final.ref, max_bytes=_PAYLOAD_BYTES)
    assert final.ref.etag == _md5(data)
    assert final.ref.content_type == _content_type(data[0])


def test_a_damaged_sidecar_is_ignored(local: LocalObjectStore) -> None:
    local.put("uploads", "k", b"bytes", content_type="text/plain")
    (local.root / META_DIR / "uploads" / "k").write_text('{"etag": 1}')

    ref = local.stat(ObjectRef(bucket="uploads", key="k"))

    assert (ref.etag, ref.content_type) == (_md5(b"bytes"), "application/octet-stream")
