"""The HTTP API in front of a real pipeline: redis-server, cpu/gpu/index Celery workers
(tiny random-weight model), LanceDB, the local object store; uvicorn on loopback.

One stack serves the whole module (starting one costs 10-20 s): uploads end indexed and
are found by search, failures carry their reason, /metrics shows the pipeline, worker log
lines carry upload ids, the curl examples of docs/http_api.md run for real, and
schemathesis finds no server error and no response that breaks the published schema.
"""

from __future__ import annotations

import json
import operator
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from producers.http.openapi import published_openapi
from shared.api_keys import ApiKeyStore, Role
from shared.vectors.records import tenants
from tests.http.conftest import API_KEY
from tests.support.api_stack import ApiStack, api_stack, wait_finished
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "producers" / "samples"
PNG = (SAMPLES / "red-circle.png").read_bytes()
WAV = (SAMPLES / "tone-440hz.wav").read_bytes()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[ApiStack]:
    root = tmp_path_factory.mktemp("api-pipeline")
    with api_stack(root, model_cache, API_KEY, log_format="json", metrics={"flush_interval_s": 0.2}) as running:
        yield running


def test_uploads_end_indexed_and_are_found_by_search(pipeline: ApiStack) -> None:
    with pipeline.http() as http:
        accepted = [
            http.post("/v1/uploads", files={"file": ("red-circle.png", PNG, "image/png")}, data={"id": "img-1"}),
            http.post("/v1/uploads", json={"id": "txt-1", "text": "a red circle on white", "tenant": "acme"}),
            http.post("/v1/uploads", files={"file": ("tone.wav", WAV)}, data={"id": "aud-1", "tenant": "acme"}),
        ]
        assert [reply.status_code for reply in accepted] == [202, 202, 202], [r.text for r in accepted]
        # Ids of a tenant's uploads are qualified by it (docs/http_api.md, Tenants).
        assert [reply.json()["id"] for reply in accepted] == ["img-1", "acme:txt-1", "acme:aud-1"]
        records = {upload_id: wait_finished(http, upload_id) for upload_id in ("img-1", "acme:txt-1", "acme:aud-1")}
        by_text = http.post("/v1/search", json={"text": "a red circle on white", "k": 3})
        by_image = http.post("/v1/search", files={"file": ("q.png", PNG)}, data={"k": "2", "modality": "image"})
        by_audio = http.post("/v1/search", files={"file": ("q.wav", WAV)}, data={"tenant": "acme"})
    assert {r["status"] for r in records.values()} == {"indexed"}, records
    assert records["img-1"]["modality"] == "image" and records["img-1"]["object"]["key"] == "img-1/red-circle.png"
    assert set(records["img-1"]["timestamps"]) >= {"queued", "preprocessed", "embedded", "indexed"}
    assert records["acme:aud-1"]["modality"] == "audio" and records["acme:aud-1"]["tenant"] == "acme"

    assert by_text.status_code == 200, by_text.text
    text_hits = by_text.json()
    assert text_hits["query"] == "text"
    assert text_hits["hits"][0]["upload_id"] == "acme:txt-1" and text_hits["hits"][0]["score"] > 0.999
    assert by_image.status_code == 200, by_image.text
    image_hits = by_image.json()["hits"]
    assert [hit["modality"] for hit in image_hits] == ["image"]  # the only indexed image
    assert image_hits[0]["upload_id"] == "img-1" and image_hits[0]["object"]["bucket"] == "uploads"
    assert by_audio.status_code == 200
    assert {hit["upload_id"] for hit in by_audio.json()["hits"]} == {"acme:txt-1", "acme:aud-1"}  # acme only
    assert by_audio.json()["hits"][0]["upload_id"] == "acme:aud-1"


def test_a_tenants_search_never_finds_another_tenants_uploads(pipeline: ApiStack) -> None:
    store = ApiKeyStore(pipeline.client.redis, pipeline.settings.queue_prefix)
    roles = frozenset({Role.INGEST, Role.READ, Role.SEARCH})
    keys = {name: store.create(tenants(name), roles)[1] for name in ("north", "south")}
    caption = "a blue square on a green field"

    def as_(name: str) -> httpx.Client:
        return httpx.Client(base_url=pipeline.url, headers={"X-API-Key": keys[name]}, timeout=120.0)

    for name in keys:
        with as_(name) as http:
            accepted = http.post("/v1/uploads", json={"id": "same-id", "text": caption})
            assert accepted.status_code == 202, accepted.text
            assert wait_finished(http, "same-id")["status"] == "indexed"
    with as_("south") as http:
        own = http.post("/v1/search", json={"text": caption, "k": 100})
        named = http.post("/v1/search", json={"text": caption, "tenant": "north"})
        by_file = http.post("/v1/search", files={"file": ("q.png", PNG)}, data={"k": "100"})
    assert own.status_code == 200 and by_file.status_code == 200
    assert {hit["upload_id"] for hit in own.json()["hits"]} == {"south:same-id"}
    assert {hit["tenant"] for hit in own.json()["hits"] + by_file.json()["hits"]} == {"south"}
    assert named.status_code == 403 and named.json()["reason"] == "tenant_forbidden"
    with pipeline.http() as http:  # an operator key sees both
        hits = http.post("/v1/search", json={"text": caption, "k": 100}).json()["hits"]
    assert {"north:same-id", "south:same-id"} <= {hit["upload_id"] for hit in hits}


def test_a_corrupt_upload_ends_failed_with_its_reason(pipeline: ApiStack) -> None:
    truncated_png = PNG[:120]  # a PNG signature and header, then nothing: sniffs fine, cannot decode
    with pipeline.http() as http:
        reply = http.post("/v1/uploads", files={"file": ("broken.png", truncated_png)}, data={"id": "broken-1"})
        assert reply.status_code == 202
        record = wait_finished(http, "broken-1")
        query = http.post("/v1/search", files={"file": ("q.png", truncated_png)})
    assert record["status"] == "failed"
    assert record["failed_stage"] == "preprocess" and record["error_reason"] == "corrupt_image", record
    assert query.status_code == 422 and query.json()["reason"] == "corrupt_media", query.text


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "==": operator.eq}


def unmet_metric_expectations(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[str]:
    """What /metrics should show after the uploads above (3 indexed, 1 failed); the
    expectations it does not meet yet."""
    expected: list[tuple[str, tuple[tuple[str, str], ...], str, float]] = [
        ("omnibind_uploads_indexed_total", (("modality", "image"),), ">=", 1),
        ("omnibind_uploads_indexed_total", (("modality", "audio"),), ">=", 1),
        ("omnibind_uploads_failed_total", (("reason", "corrupt_image"), ("stage", "preprocess")), ">=", 1),
        ("omnibind_upload_latency_seconds_count", (("status", "indexed"),), ">=", 3),
        ("omnibind_upload_latency_seconds_sum", (("status", "indexed"),), ">", 0),
        *[
            ("omnibind_stage_duration_seconds_count", (("outcome", "ok"), ("stage", stage)), ">=", 3)
            for stage in ("preprocess", "embed", "index")
        ],
        ("omnibind_batch_size_count", (("runtime", "gpu"),), ">=", 1),
        ("omnibind_batch_size_sum", (("runtime", "gpu"),), ">=", 3),  # 3 uploads + the searches
        ("omnibind_batch_size_count", (("runtime", "index"),), ">=", 1),
        ("omnibind_queue_length", (("queue", "cpu"),), ">=", 0),
        ("omnibind_uploads", (("status", "indexed"),), ">=", 3),
        ("omnibind_uploads", (("status", "failed"),), ">=", 1),
        *[("omnibind_workers", (("kind", kind),), "==", 1) for kind in ("cpu", "gpu", "index")],
        ("omnibind_results_stream_length", (), ">=", 4),
        ("omnibind_dead_letters", (), ">=", 1),
        (
            "omnibind_http_requests_total",
            (("method", "POST"), ("route", "/v1/uploads"), ("status", "202")),
            ">=",
            4,
        ),
        ("omnibind_redis_up", (), "==", 1),
    ]
    return [
        f"{name}{dict(labels)} = {samples.get((name, labels))}, expected {op} {bound}"
        for name, labels, op, bound in expected
        if (name, labels) not in samples or not COMPARE[op](samples[name, labels], bound)
    ]


def test_metrics_expose_the_pipeline_after_uploads(pipeline: ApiStack) -> None:
    # Every worker process adds its own counts to Redis every 0.2 s, each on its own clock,
    # so the numbers arrive in pieces: wait until all of them are there.
    unmet: list[str] = []

    def all_met() -> bool:
        unmet[:] = unmet_metric_expectations(metric_samples(http.get("/metrics").text))
        return not unmet

    with pipeline.http() as http:
        wait_until(all_met, timeout_s=60, what=lambda: f"every expected metric; unmet: {unmet}", poll_s=0.2)


def test_worker_log_lines_carry_the_upload_id(pipeline: ApiStack) -> None:
    json_lines = []
    for log in sorted(pipeline.log_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                json_lines.append(json.loads(line))
    about_broken = [doc for doc in json_lines if doc["upload_id"] == "broken-1"]
    assert about_broken, "no worker line names the failed upload"
    failure = next(doc for doc in about_broken if "failed permanently" in doc["message"])
    assert failure["stage"] == "preprocess" and failure["worker"] == "cpu" and failure["level"] == "WARNING"
    # A line logged inside a stage always knows its upload.
    assert all(doc["upload_id"] for doc in json_lines if doc["stage"])
    # Celery's own line about each task of a successful upload names the upload too.
    succeeded = [doc for doc in json_lines if doc["upload_id"] == "img-1" and " succeeded in " in doc["message"]]
    assert {doc["worker"] for doc in succeeded} == {"cpu", "gpu", "index"}, succeeded


# -- docs/http_api.md and docs/integrating.md: their curl examples, run for real -------------

CURL_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def curl_examples() -> list[str]:
    """The ```bash blocks of docs/http_api.md that run curl, then those of docs/integrating.md
    that call the API (``$OMNIBIND_URL``), in order."""
    guide = (ROOT / "docs" / "http_api.md").read_text(encoding="utf-8")
    integrating = (ROOT / "docs" / "integrating.md").read_text(encoding="utf-8")
    blocks = [block for block in CURL_BLOCK.findall(guide) if "curl " in block]
    return blocks + [
        block for block in CURL_BLOCK.findall(integrating) if "curl " in block and "$OMNIBIND_URL" in block
    ]


def test_the_docs_have_curl_examples_for_every_endpoint() -> None:
    joined = "\n".join(curl_examples())
    for path in (
        *("/v1/uploads", "/v1/uploads/", "/v1/search", "/healthz", "/readyz", "/metrics"),
        *("/v1/review", "/explain", "/decision", "/thumbnail", "/v1/dead-letters", "-X DELETE"),
    ):
        assert path in joined, path


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl binary on this machine")
@pytest.mark.parametrize("index", range(len(curl_examples())))
def test_curl_examples_of_the_docs_run(pipeline: ApiStack, index: int) -> None:
    block = curl_examples()[index]
    env = {
        **os.environ,
        "OMNIBIND_URL": pipeline.url,
        "OMNIBIND_API_KEY": API_KEY,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{block}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# -- schemathesis against the served OpenAPI document ----------------------------------------


# The published document (the served one equals it: test_openapi.py). Loaded from code at
# collection, since schemathesis' lazy fixture loader does not support pytest 9.
# Both modes: valid requests (must be answered per the schema) and invalid ones (must be
# refused with a documented 4xx, never a 5xx). Coverage phase off: its boundary cases would
# dominate the run time; fuzzing with bounded examples stays fast.
SCHEMATHESIS_CONFIG = schemathesis.Config.from_dict(
    {"generation": {"mode": "all"}, "phases": {"coverage": {"enabled": False}}}
)
schema = schemathesis.openapi.from_dict(published_openapi(), config=SCHEMATHESIS_CONFIG)
CHECKS = [
    not_a_server_error,  # no 5xx, whatever the input
    status_code_conformance,  # every status answered is documented
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,  # every body matches its documented schema
    negative_data_rejection,  # a request that breaks the schema is refused with a 4xx
    ignored_auth,  # routes that declare auth refuse requests without it
    unsupported_method,  # other methods get 405
]


# One test per operation with the operation in its id: schemathesis' own `schema.parametrize()`
# gives all 19 the same node id under pytest 9, and pytest-xdist, which schedules by node id,
# then ran one of them and silently dropped the other 18.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation.label for operation in OPERATIONS])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(operation: Any, pipeline: ApiStack) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def answered_per_the_schema(case: Any) -> None:
        case.call_and_validate(
            base_url=pipeline.url, headers={"Authorization": f"Bearer {API_KEY}"}, checks=CHECKS, timeout=120
        )

    answered_per_the_schema()
