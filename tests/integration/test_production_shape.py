"""End to end in the shape users deploy: files put into a real MinIO with the SDK and posted to
the HTTP API are embedded by Celery workers and indexed in a real Weaviate with their MinIO
references; bucket notifications travel through Redis to `omnibind bridge`; removals,
re-creations and un-deletions of objects keep the index in step with the bucket."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from producers.bridge.minio_events import minio_upload_id
from shared.events import UploadStatus
from tests.support.production import API_KEY, ProductionShape, production_shape
from tests.support.stack import SAMPLES
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

FINISH_TIMEOUT_S = 180.0
TEXTS = [
    "a red bicycle leaning against a brick wall",
    "waves breaking on a rocky shore at dawn",
    "a bowl of ramen with a soft boiled egg",
    "children flying kites on a windy hill",
    "an old lighthouse under a starry sky",
]


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[ProductionShape]:
    with production_shape(tmp_path_factory.mktemp("production"), model_cache) as running:
        yield running


def sample_files() -> dict[str, bytes]:
    """≥ 50 files under bucket keys: every committed sample (images, audio) and text notes."""
    files = {
        f"samples/{path.name}": path.read_bytes() for path in sorted(SAMPLES.iterdir()) if path.suffix not in {".json"}
    }
    texts = json.loads((SAMPLES / "texts.json").read_text(encoding="utf-8"))
    files |= {f"notes/{name} ü.txt": text.encode() for name, text in texts.items() if text.strip()}
    files |= {f"captions/{n:02d}.txt": f"{text} (caption {n})".encode() for n, text in enumerate(TEXTS * 3)}
    assert len(files) >= 50
    return files


def put(shape: ProductionShape, key: str, data: bytes) -> str:
    """Put `data` with the SDK; returns the version id."""
    result = shape.s3().put_object(shape.bucket, key, io.BytesIO(data), len(data))
    return str(result.version_id)


def finished(shape: ProductionShape, upload_ids: list[str]) -> dict[str, UploadStatus]:
    records = shape.client.wait(upload_ids, timeout_s=FINISH_TIMEOUT_S)
    missing = set(upload_ids) - set(records)
    assert not missing, f"{len(missing)} uploads did not finish\n{shape.logs()}"
    return {upload_id: record.status for upload_id, record in records.items()}


def http(shape: ProductionShape) -> httpx.Client:
    return httpx.Client(base_url=shape.api.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120.0)


def test_objects_put_into_minio_and_posted_to_the_api_are_indexed_in_weaviate_once(shape: ProductionShape) -> None:
    files = sample_files()
    for key, data in files.items():
        put(shape, key, data)
    with http(shape) as api:
        posted = [
            api.post("/v1/uploads", json={"id": f"api-text-{n}", "text": text, "tenant": "acme"})
            for n, text in enumerate(TEXTS)
        ]
        posted.append(
            api.post(
                "/v1/uploads",
                files={"file": ("circle.png", (SAMPLES / "small_100x150.png").read_bytes(), "image/png")},
                data={"id": "api-image"},
            )
        )
    assert [reply.status_code for reply in posted] == [202] * 6, [reply.text for reply in posted]
    by_key = {minio_upload_id(shape.bucket, key): key for key in files}
    api_ids = [reply.json()["id"] for reply in posted]
    assert api_ids[:5] == [f"acme:api-text-{n}" for n in range(5)]  # ids are namespaced by tenant

    statuses = finished(shape, [*by_key, *api_ids])

    assert set(statuses.values()) == {UploadStatus.INDEXED}, {u: s for u, s in statuses.items() if s != "indexed"}
    per_upload = shape.weaviate_objects_per_upload()
    assert {upload_id: per_upload[upload_id] for upload_id in statuses} == dict.fromkeys(statuses, 1)
    s3 = shape.s3()
    for upload_id, key in by_key.items():
        record = shape.client.vectors.get(upload_id)
        assert record is not None and record.object is not None
        stat = s3.stat_object(shape.bucket, key)
        assert (record.object.bucket, record.object.key, record.object.version_id) == (
            shape.bucket,
            key,
            stat.version_id,
        )
        assert record.source == "minio"
    api_image = shape.client.vectors.get("api-image")
    assert api_image is not None and api_image.object is not None
    assert api_image.object.bucket == shape.bucket and api_image.object.key == "api-image/circle.png"


def test_search_through_the_api_finds_what_weaviate_holds(shape: ProductionShape) -> None:
    text = "a lighthouse painted red and white"
    with http(shape) as api:
        assert api.post("/v1/uploads", json={"id": "search-me", "text": text}).status_code == 202
        assert finished(shape, ["search-me"]) == {"search-me": UploadStatus.INDEXED}
        reply = api.post("/v1/search", json={"text": text, "k": 5})

    assert reply.status_code == 200, reply.text
    top = reply.json()["hits"][0]
    assert top["upload_id"] == "search-me" and top["score"] > 0.999
    assert top["modality"] == "text" and top["object"] is None  # inline text has no blob


def test_deleting_objects_removes_their_records(shape: ProductionShape) -> None:
    keys = [f"doomed/{n}.txt" for n in range(3)]
    for key in keys:
        put(shape, key, f"a note that will be deleted, number {key}".encode())
    ids = [minio_upload_id(shape.bucket, key) for key in keys]
    assert set(finished(shape, ids).values()) == {UploadStatus.INDEXED}

    for key in keys[:2]:
        shape.s3().remove_object(shape.bucket, key)  # versioned bucket: a delete marker

    wait_until(
        lambda: all(shape.client.vectors.get(i) is None for i in ids[:2]),
        timeout_s=120,
        what="the records to go",
        poll_s=0.3,
    )
    assert shape.client.vectors.get(ids[2]) is not None


def test_delete_then_recreate_of_a_key_ends_with_the_new_object_indexed(shape: ProductionShape) -> None:
    key = "reborn/note.txt"
    upload_id = minio_upload_id(shape.bucket, key)
    put(shape, key, b"the first version of a note about tulips")
    assert finished(shape, [upload_id]) == {upload_id: UploadStatus.INDEXED}

    shape.s3().remove_object(shape.bucket, key)
    new_version = put(shape, key, b"the second version, about sunflowers instead")

    def new_version_indexed() -> bool:
        record = shape.client.vectors.get(upload_id)
        return record is not None and record.object is not None and record.object.version_id == new_version

    wait_until(new_version_indexed, timeout_s=FINISH_TIMEOUT_S, what="the re-created object's record", poll_s=0.3)
    # Whatever order the delete and the new run were handled in, the new record stays.
    wait_until(shape.idle, timeout_s=120, what="every notification and task to be handled", poll_s=0.3)
    assert new_version_indexed()


def test_removing_a_delete_marker_reindexes_the_object(shape: ProductionShape) -> None:
    key = "undeleted/photo.png"
    upload_id = minio_upload_id(shape.bucket, key)
    version = put(shape, key, (SAMPLES / "small_100x150.png").read_bytes())
    assert finished(shape, [upload_id]) == {upload_id: UploadStatus.INDEXED}
    s3 = shape.s3()
    s3.remove_object(shape.bucket, key)
    wait_until(
        lambda: shape.client.vectors.get(upload_id) is None,
        timeout_s=120,
        what="the deleted object's record to go",
        poll_s=0.3,
    )
    (marker,) = [v for v in s3.list_objects(shape.bucket, prefix=key, include_version=True) if v.is_delete_marker]

    s3.remove_object(shape.bucket, key, version_id=marker.version_id)

    def indexed_again() -> bool:
        record = shape.client.vectors.get(upload_id)
        return record is not None and record.object is not None and record.object.version_id == version

    wait_until(indexed_again, timeout_s=FINISH_TIMEOUT_S, what="the un-deleted object to be indexed again", poll_s=0.3)
