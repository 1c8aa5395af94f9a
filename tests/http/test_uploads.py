"""POST /v1/uploads and GET /v1/uploads/{id} through real HTTP against a real Redis and the
local object store (no workers: uploads stay queued)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.backpressure import queue_length
from shared.events import ObjectRef
from shared.queue import QueueName
from tests.http.conftest import RunningApi

SAMPLES = Path(__file__).resolve().parents[2] / "producers" / "samples"
PNG = (SAMPLES / "red-circle.png").read_bytes()


def cpu_backlog(api: RunningApi) -> int:
    return queue_length(api.client.redis, api.settings.queue_prefix, QueueName.CPU)


def test_multipart_file_is_stored_queued_and_answered_202(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        reply = http.post(
            "/v1/uploads",
            files={"file": ("red circle.png", PNG, "image/png")},
            data={"tenant": "acme", "metadata": json.dumps({"album": "shapes"}), "id": "upload-1"},
        )
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert body == {
            "id": "acme:upload-1",  # qualified by its tenant (docs/http_api.md, Tenants)
            "status": "queued",
            "status_url": "/v1/uploads/acme:upload-1",
            "run": 1,
            "started": True,
        }
        assert reply.headers["location"] == "/v1/uploads/acme:upload-1"

        status = http.get(body["status_url"])
    assert status.status_code == 200
    record = status.json()
    assert record["status"] == "queued" and record["tenant"] == "acme" and record["source"] == "http"
    ref = ObjectRef.model_validate(record["object"])
    assert ref.key == "acme:upload-1/red circle.png"
    assert api.client.objects.get(ref, max_bytes=len(PNG)) == PNG
    assert cpu_backlog(api) == 1


def test_json_text_event_is_queued(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        reply = http.post("/v1/uploads", json={"id": "caption-7", "text": "a red circle", "tenant": "acme"})
        assert reply.status_code == 202, reply.text
        record = http.get("/v1/uploads/acme:caption-7").json()
    assert record["status"] == "queued" and record["modality"] is None and record["object"] is None
    assert cpu_backlog(api) == 1


def test_json_event_for_a_stored_object_is_queued(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    ref = api.client.objects.put(api.settings.objects.bucket, "platform/photo.png", PNG)
    with api.http() as http:
        reply = http.post("/v1/uploads", json={"object": {"bucket": ref.bucket, "key": ref.key}, "modality": "image"})
    assert reply.status_code == 202, reply.text
    assert api.client.status(reply.json()["id"]) is not None


def test_event_for_a_missing_object_is_refused_with_its_reason(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        reply = http.post("/v1/uploads", json={"object": {"bucket": "uploads", "key": "nowhere.png"}})
    assert reply.status_code == 422
    assert reply.json()["reason"] == "object_not_found"
    assert cpu_backlog(api) == 0


def test_invalid_event_is_refused_with_invalid_event(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        both = http.post("/v1/uploads", json={"text": "x", "object": {"bucket": "uploads", "key": "k"}})
        future = http.post("/v1/uploads", json={"version": "2", "text": "x"})
        not_json = http.post("/v1/uploads", content=b"{nope", headers={"content-type": "application/json"})
    assert both.status_code == 422 and both.json()["reason"] == "invalid_event"
    assert "exactly one of" in both.json()["message"]
    assert future.status_code == 422 and "major version" in future.json()["message"]
    assert not_json.status_code == 400 and not_json.json()["reason"] == "bad_json"


def test_unsupported_file_is_refused_415_and_not_stored(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        reply = http.post("/v1/uploads", files={"file": ("x.bin", b"\x00\x01\x02garbage", "application/octet-stream")})
    assert reply.status_code == 415
    assert reply.json()["reason"] == "unsupported_format"
    assert not (api.settings.objects_root / api.settings.objects.bucket).exists()
    assert cpu_backlog(api) == 0


def test_modality_mismatch_is_refused(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        reply = http.post("/v1/uploads", files={"file": ("a.png", PNG)}, data={"modality": "audio"})
    assert reply.status_code == 422 and reply.json()["reason"] == "modality_mismatch"


def test_bad_form_fields_name_the_field(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        no_file = http.post("/v1/uploads", data={"tenant": "acme"}, files={"other": ("a.png", PNG)})
        bad_meta = http.post("/v1/uploads", files={"file": ("a.png", PNG)}, data={"metadata": "[1, 2]"})
        bad_id = http.post("/v1/uploads", files={"file": ("a.png", PNG)}, data={"id": "../etc"})
    assert no_file.status_code == 422
    assert [p["field"] for p in no_file.json()["problems"]] == ["form.file"]
    assert bad_meta.status_code == 422 and bad_meta.json()["problems"][0]["field"] == "form.metadata"
    assert bad_id.status_code == 422 and bad_id.json()["problems"][0]["field"] == "form.id"


def test_other_content_types_are_refused_415(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        reply = http.post("/v1/uploads", content=PNG, headers={"content-type": "image/png"})
    assert reply.status_code == 415 and reply.json()["reason"] == "unsupported_media_type"


def test_unknown_upload_is_404_with_reason(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        missing = http.get("/v1/uploads/never-seen")
        invalid = http.get("/v1/uploads/-not-an-id")
        escaping = http.get("/v1/uploads/..%2Fsecret")
        no_route = http.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["reason"] == "upload_not_found"
    assert invalid.status_code == 422 and invalid.json()["problems"][0]["field"] == "path.upload_id"
    assert escaping.status_code == 404 and escaping.json()["reason"] == "not_found"
    assert no_route.status_code == 404 and no_route.json()["reason"] == "not_found"


def test_backpressure_answers_429_with_retry_after(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(backpressure={"max_cpu_queue": 2, "retry_after_s": 7})
    with api.http() as http:
        accepted = [http.post("/v1/uploads", json={"text": f"caption {i}"}).status_code for i in range(3)]
        refused = http.post("/v1/uploads", files={"file": ("a.png", PNG)})
        search = http.post("/v1/search", json={"text": "anything"})
    assert accepted == [202, 202, 202]  # the check is "more than 2 waiting"
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert refused.json()["reason"] == "busy"
    assert search.status_code == 429
    assert cpu_backlog(api) == 3


def test_a_deeply_nested_json_body_is_answered_400_too_deep_before_it_is_parsed(
    start_api: Callable[..., RunningApi],
) -> None:
    api = start_api()
    deep = "[" * 100_000 + "]" * 100_000
    with api.http() as http:
        bare = http.post("/v1/uploads", content=deep, headers={"Content-Type": "application/json"})
        inside = http.post(
            "/v1/uploads",
            content='{"text": "x", "metadata": ' + deep + "}",
            headers={"Content-Type": "application/json"},
        )
        search = http.post("/v1/search", content=deep, headers={"Content-Type": "application/json"})
        form = http.post(
            "/v1/uploads", files={"file": ("a.txt", b"a caption", "text/plain")}, data={"metadata": deep[:20_000]}
        )
    for reply in (bare, inside, search):
        assert reply.status_code == 400, reply.text
        assert reply.json()["reason"] == "too_deep"
    assert form.status_code == 422, form.text
    assert "nests deeper" in form.text
    assert cpu_backlog(api) == 0


def test_a_json_body_that_is_not_utf8_is_answered_400_bad_json(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http() as http:
        reply = http.post("/v1/uploads", content=b'{"text": "\xff"}', headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["reason"] == "bad_json"


def test_fifty_identical_posts_of_one_id_queue_one_run_and_answer_200_naming_it(
    start_api: Callable[..., RunningApi],
) -> None:
    api = start_api()
    posts = 50

    def post(kind: str) -> tuple[int, dict[str, object]]:
        with api.http() as http:
            if kind == "json":
                reply = http.post("/v1/uploads", json={"id": "twin", "text": "one caption, fifty posts"})
            else:
                reply = http.post("/v1/uploads", files={"file": ("c.png", PNG, "image/png")}, data={"id": "twin"})
        return reply.status_code, reply.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, ["json", "file"] * (posts // 2)))

    started = [body for code, body in answers if code == 202]
    repeated = [body for code, body in answers if code == 200]
    assert len(started) == 1 and len(repeated) == posts - 1, [code for code, _ in answers]
    assert started[0] | {"started": False} == repeated[0]
    assert all(
        body == {"id": "twin", "status": "queued", "status_url": "/v1/uploads/twin", "run": 1, "started": False}
        for body in repeated
    )
    assert cpu_backlog(api) == 1
