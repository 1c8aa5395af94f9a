"""What the embedded store's folder holds against the data, by kind, as the index worker writes.

    PYTHONPATH=$PWD .venv/bin/python bench/lancedb_disk.py DIR --records 10000 --rate 70

Without the stack: a `LanceDBVectorStore` with the default settings (background compaction
every 100 writes, 10 s cleanup window) takes 32-d records carrying the metadata the pipeline
writes (ids, object reference, hashes, a moderation decision with its signals) in batches of
8-32 new records, paced at `--rate` records/s (the 100,000-upload soak indexed ~70/s). Every
`--every` records it prints the folder by kind — data and index files the current version
references ("live") or not ("replaced"; split at 256 KB: a compaction's rewritten tail
fragment vs the small files of single writes), manifests, transaction and deletion files —
and every 250 records from 2,500 on it samples disk / live, live being what the soak calls
live (`Table.stats()["total_bytes"]`: data + index files of the current version). At the
end: the same once the last background compaction (and its delayed cleanup) has ended.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.events import Band, Modality, Moderation, ModerationSignal, ObjectRef
from shared.vectors.lancedb import LanceDBVectorStore
from shared.vectors.records import VectorRecord

MB = 2**20
CATEGORIES = ("nudity", "violence", "weapons", "drugs", "hate", "self_harm")
LARGE_BYTES = 256 * 1024


def record(i: int, rng: np.random.Generator) -> VectorRecord:
    vector = rng.standard_normal(32).astype(np.float32)
    now = datetime.now(UTC)
    signals = tuple(
        ModerationSignal(
            category=c, source="zeroshot", name="text", score=0.1, review=0.5, block=0.8, band=Band.ALLOW, margin=-0.4
        )
        for c in CATEGORIES
    )
    return VectorRecord(
        upload_id=str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | i)),
        vector=vector / np.linalg.norm(vector),
        modality=Modality.TEXT,
        object=ObjectRef(
            bucket="uploads", key=f"default/2026/12/06/{i}.txt", etag=f'"{i:032x}"', size=300, content_type="text/plain"
        ),
        content_type="text/plain",
        size=300,
        sha256=f"{i:064x}",
        tenant="default",
        metadata={"caption": f"caption number {i}"},
        moderation=Moderation(
            scores={c: float(rng.random()) for c in CATEGORIES},
            signals=signals,
            policy_version="2025-03-01",
            policy_name="default",
            model="imagebind_tiny",
            checkpoint="ab" * 32,
            decided_at=now,
        ),
        model="imagebind_tiny",
        checkpoint="cd" * 32,
        created_at=now,
        indexed_at=now,
    )


def by_kind(root: Path) -> dict[str, tuple[int, int]]:
    """(files, bytes) of each kind of file in the table directory `root`."""
    import lance

    dataset = lance.dataset(str(root))
    data = {file.path for fragment in dataset.get_fragments() for file in fragment.data_files()}
    indexes = {str(segment.uuid) for index in dataset.describe_indices() for segment in index.segments}
    files: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        top, name = [*path.relative_to(root).parts, ""][:2]
        nbytes = path.stat().st_size
        if top == "data":
            kind = "data live" if name in data else "data replaced " + (">=256KB" if nbytes >= LARGE_BYTES else "small")
        elif top == "_indices":
            kind = "index live" if name in indexes else "index replaced"
        else:
            kind = {"_versions": "manifests", "_transactions": "transactions", "_deletions": "deletions"}.get(top, top)
        files[kind] += 1
        size[kind] += nbytes
    return {kind: (files[kind], size[kind]) for kind in sorted(files)}


def disk_and_live(directory: Path) -> tuple[int, int]:
    import lancedb

    stats: Any = lancedb.connect(directory).open_table("uploads").stats()  # a dict at run time
    disk = sum(f.stat().st_size for f in (directory / "uploads.lance").rglob("*") if f.is_file())
    return disk, int(stats["total_bytes"])


def report(directory: Path, label: str) -> None:
    disk, live = disk_and_live(directory)
    print(f"{label}: disk {disk / MB:.2f} MB, live {live / MB:.2f} MB, disk / live {disk / live:.2f}")
    for kind, (count, nbytes) in by_kind(directory / "uploads.lance").items():
        print(f"    {kind:24s} {count:5d} files {nbytes / MB:8.2f} MB")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="an empty directory for the store")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=2_500, help="print the folder by kind every this many records")
    parser.add_argument("--rate", type=float, default=70.0, help="records/s (0 = as fast as it goes)")
    args = parser.parse_args()
    store = LanceDBVectorStore(args.directory, dimension=32)
    rng = np.random.default_rng(1)
    ratios: list[float] = []
    written, started = 0, time.monotonic()
    while written < args.records:
        batch = int(rng.integers(8, 33))
        store.upsert([record(written + j, rng) for j in range(batch)])
        before, written = written, written + batch
        if args.rate:
            time.sleep(max(0.0, started + written / args.rate - time.monotonic()))
        if written // args.every != before // args.every:
            report(args.directory, f"{written} records, {time.monotonic() - started:.0f} s")
        if written >= 2_500 and written // 250 != before // 250:
            try:
                disk, live = disk_and_live(args.directory)
            except (OSError, RuntimeError, ValueError):  # a version cleaned up under the read
                continue
            ratios.append(disk / live)
    print("disk / live every 250 records from 2,500:", " ".join(f"{r:.2f}" for r in ratios))
    if ratios:
        print(f"min {min(ratios):.2f} mean {sum(ratios) / len(ratios):.2f} max {max(ratios):.2f}")
    store.wait_for_maintenance()
    report(args.directory, "once the last background compaction had ended")


if __name__ == "__main__":
    main()
