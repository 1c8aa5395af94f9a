"""The review routes of the HTTP API against a real pipeline (redis-server, cpu/gpu/index
Celery workers with the tiny model, LanceDB, the local object store, uvicorn on loopback):
list with filters and cursors, the review queue, explain, decide (decision log, status and
vector record, ``moderation.decided`` event, blocklist), media and thumbnails with their
safety headers, dead letters and their retry, delete. Every route is tried with a second
tenant's key, which sees and changes nothing of the first tenant's.

Uploads are made flagged deterministically: their bytes are listed in the blocklist
(exact SHA-256) before they are sent, so the pipeline flags them at the block band. The
zero-shot scores of the tiny random model are random, so the policy here is the default one
with a flat softmax (temperature 1) and thresholds no such score reaches.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from producers.cli import main as cli
from shared.api_keys import Role
from shared.audit import AuditLog
from shared.errors import ObjectNotFound
from shared.events import Modality
from shared.moderation.blocklist import Blocklist, BlocklistEntry, entry_id_for
from shared.moderation.log import DecisionLog
from shared.moderation.policy import default_policy_text
from shared.streams import ResultStream
from tests.http.conftest import API_KEY
from tests.support.api_stack import FINISH_TIMEOUT_S, ApiStack, api_stack, wait_finished
from tests.support.media import frame_level, video_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "producers" / "samples"
WAV = (SAMPLES / "tone-440hz.wav").read_bytes()
ROLES = frozenset({Role.INGEST, Role.READ, Role.SEARCH, Role.MODERATE})


def calm_policy(path: Path) -> Path:
    """The default policy, but no zero-shot score of the random model reaches review."""
    text = default_policy_text().replace("temperature = 0.01", "temperature = 1.0")
    text = re.sub(r"(?m)^review = [0-9.]+$", "review = 0.98", text)
    text = re.sub(r"(?m)^block = [0-9.]+$", "block = 0.99", text)
    path.write_text(text, encoding="utf-8")
    return path


def png(seed: int, size: int = 120) -> bytes:
    """A distinct RGB picture per seed (distinct bytes: distinct SHA-256)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size * 2, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Review(ApiStack):
    acme: str  # keys
    beta: str
    acme_reader: str  # acme, read only
    acme_key_id: str

    def blocklist(self, data: bytes, category: str = "violence") -> None:
        sha = hashlib.sha256(data).hexdigest()
        entry = BlocklistEntry(id=entry_id_for(sha), category=category, sha256=sha, modality=Modality.IMAGE)
        Blocklist(self.client.redis, self.client.settings.queue_prefix).add(entry)


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Review]:
    root = tmp_path_factory.mktemp("review-api")
    with api_stack(root, model_cache, API_KEY, moderation={"policy": calm_policy(root / "policy.toml")}) as running:
        acme_key_id, acme = running.new_key("acme", ROLES)
        yield Review(
            **running.as_fields(),
            acme=acme,
            beta=running.new_key("beta", ROLES)[1],
            acme_reader=running.new_key("acme", frozenset({Role.READ}))[1],
            acme_key_id=acme_key_id,
        )


@pytest.fixture(scope="module")
def flagged(review: Review) -> dict[str, dict[str, Any]]:
    """acme: three flagged images (blocklisted bytes), one clean image and one audio file."""
    records = {}
    for n in range(3):  # listed before any upload: workers re-read the blocklist only now and then
        review.blocklist(png(n))
    for n in range(3):
        records[f"bad-{n}"] = review.upload(review.acme, f"bad-{n}.png", png(n), f"bad-{n}")
    records["clean"] = review.upload(review.acme, "clean.png", png(100), "clean")
    records["tone"] = review.upload(review.acme, "tone.wav", WAV, "tone")
    assert {r["status"] for r in records.values()} == {"indexed"}, records
    return records


def ids(page: dict[str, Any]) -> list[str]:
    return [item["upload_id"] for item in page["items"]]


def test_the_review_queue_holds_the_tenants_flagged_uploads_newest_first(
    review: Review, flagged: dict[str, dict[str, Any]]
) -> None:
    with review.as_(review.acme) as http:
        queue = http.get("/v1/review").json()
        only_audio = http.get("/v1/review", params={"modality": "audio"}).json()
        by_category = http.get("/v1/review", params={"category": "violence", "band": "block"}).json()
        other_category = http.get("/v1/review", params={"category": "self_harm"}).json()
    bad = ["acme:bad-2", "acme:bad-1", "acme:bad-0"]
    assert [i for i in ids(queue) if i in bad] == bad  # newest first
    assert "acme:clean" not in ids(queue) and "acme:tone" not in ids(queue)
    item = next(i for i in queue["items"] if i["upload_id"] == "acme:bad-0")
    assert item["band"] == "block" and item["review_state"] == "pending" and item["categories"] == ["violence"]
    assert only_audio["items"] == [] and set(bad) <= set(ids(by_category)) and other_category["items"] == []
    with review.as_(review.beta) as http:
        assert http.get("/v1/review").json() == {"items": [], "next_cursor": None}
        assert http.get("/v1/uploads").json() == {"items": [], "next_cursor": None}
        assert http.get("/v1/review", params={"tenant": "acme"}).status_code == 403
    with review.as_(review.acme_reader) as http:
        assert http.get("/v1/review").json()["reason"] == "forbidden"  # the queue needs `moderate`


def test_listing_filters_and_pages_with_a_cursor(review: Review, flagged: dict[str, dict[str, Any]]) -> None:
    seen: list[str] = []
    with review.as_(review.acme) as http:
        everything = ids(http.get("/v1/uploads", params={"limit": 200}).json())
        cursor = None
        while True:
            page = http.get("/v1/uploads", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += ids(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        audio = ids(http.get("/v1/uploads", params={"modality": "audio"}).json())
        unflagged = set(ids(http.get("/v1/uploads", params={"flagged": "false", "status": "indexed"}).json()))
        future = http.get("/v1/uploads", params={"since": "2999-01-01T00:00:00Z"}).json()
        bad_cursor = http.get("/v1/uploads", params={"cursor": "bm90LW91cnM"})
    assert seen == everything and len(set(seen)) == len(seen)
    assert {f"acme:{name}" for name in flagged} <= set(everything)
    assert all(i.startswith("acme:") for i in everything)
    assert audio == ["acme:tone"] and {"acme:clean", "acme:tone"} <= unflagged and "acme:bad-0" not in unflagged
    assert future["items"] == []
    assert bad_cursor.status_code == 422 and bad_cursor.json()["reason"] == "invalid_cursor"


def test_explain_gives_the_decision_in_full_to_its_tenant_only(
    review: Review, flagged: dict[str, dict[str, Any]]
) -> None:
    with review.as_(review.acme) as http:
        explained = http.get("/v1/uploads/bad-0/explain").json()
    assert explained["upload_id"] == "acme:bad-0"
    assert explained["moderation"]["flagged"] is True and explained["moderation"]["action"] == "block"
    assert any(s["source"] == "blocklist" for s in explained["moderation"]["signals"])
    assert explained["history"][0]["source"] == "pipeline" and explained["review"] is None
    with review.as_(review.beta) as http:
        for name in ("bad-0", "acme:bad-0"):
            reply = http.get(f"/v1/uploads/{name}/explain")
            assert reply.status_code == 404 and reply.json()["reason"] == "upload_not_found"


def test_approve_is_logged_with_who_and_when_and_changes_the_uploads_state(
    review: Review, flagged: dict[str, dict[str, Any]]
) -> None:
    results_before = ResultStream(review.client.redis, review.client.settings.queue_prefix).last_id()
    with review.as_(review.beta) as http:  # another tenant's key: 404, nothing changes
        assert http.post("/v1/uploads/acme:bad-1/decision", json={"action": "approve"}).status_code == 404
    assert review.client.status("acme:bad-1").flagged is True  # type: ignore[union-attr]
    with review.as_(review.acme_reader) as http:
        assert http.post("/v1/uploads/bad-1/decision", json={"action": "approve"}).status_code == 403
    with review.as_(review.acme) as http:
        reply = http.post("/v1/uploads/bad-1/decision", json={"action": "approve", "note": "a <b>movie</b> still"})
        assert reply.status_code == 200, reply.text
        listed = {i["upload_id"]: i for i in http.get("/v1/uploads").json()["items"]}
        queue = ids(http.get("/v1/review").json())
        record = http.get("/v1/uploads/bad-1").json()
    outcome = reply.json()
    assert outcome["review"]["action"] == "approve" and outcome["review"]["by"] == f"key:{review.acme_key_id}"
    assert outcome["moderation"]["flagged"] is False and outcome["moderation"]["action"] == "allow"
    assert record["flagged"] is False and record["categories"] == []
    assert listed["acme:bad-1"]["review_state"] == "decided" and "acme:bad-1" not in queue
    logged = DecisionLog(review.client.redis, review.client.settings.queue_prefix).newest(upload_id="acme:bad-1")[0]
    assert logged.source == "human" and logged.reviewer == f"key:{review.acme_key_id}"
    assert logged.decision.flagged is False and logged.decision.decided_at is not None
    # The review script indexed its entry under the upload, beside the pipeline's.
    indexed = review.client.redis.lrange("omnibind:decisions:upload:acme:bad-1", 0, -1)
    assert len(indexed) == 2 and indexed[0] == logged.entry_id
    vector = review.client.vectors.get("acme:bad-1")
    assert vector is not None and vector.moderation.flagged is False
    audited = [
        e
        for e in AuditLog(review.client.redis, review.client.settings.queue_prefix).newest(limit=1000)
        if e.target == "acme:bad-1"
    ]
    assert [(e.action, e.actor, e.tenant) for e in audited] == [
        ("moderation.decision", f"key:{review.acme_key_id}", "acme")
    ]
    events = ResultStream(review.client.redis, review.client.settings.queue_prefix).read(results_before, count=100)
    decided = [e for e in events if e.event_type == "moderation.decided"]
    assert [e.result.upload_id for e in decided] == ["acme:bad-1"]
    assert decided[0].review is not None and decided[0].review["by"] == f"key:{review.acme_key_id}"
    assert decided[0].result.flagged is False


def test_block_lists_the_upload_in_the_blocklist_under_the_category(
    review: Review, flagged: dict[str, dict[str, Any]]
) -> None:
    blocklist = Blocklist(review.client.redis, review.client.settings.queue_prefix)
    before = {e.id for e in blocklist.entries()}
    with review.as_(review.beta) as http:
        assert http.post("/v1/uploads/acme:clean/decision", json={"action": "block"}).status_code == 404
    assert {e.id for e in blocklist.entries()} == before
    with review.as_(review.acme) as http:
        unknown = http.post("/v1/uploads/clean/decision", json={"action": "block", "category": "no-such"})
        missing = http.post("/v1/uploads/clean/decision", json={"action": "block"})  # nothing fired: name one
        reply = http.post("/v1/uploads/clean/decision", json={"action": "block", "category": "sexual"})
        escalated = http.post("/v1/uploads/bad-2/decision", json={"action": "escalate"})
        queue = {i["upload_id"]: i for i in http.get("/v1/review").json()["items"]}
    assert unknown.status_code == 422 and unknown.json()["reason"] == "unknown_category"
    assert missing.status_code == 422 and missing.json()["reason"] == "unknown_category"
    assert reply.status_code == 200, reply.text
    assert reply.json()["moderation"]["categories"] == ["sexual"] and reply.json()["moderation"]["flagged"] is True
    added = blocklist.get(reply.json()["review"]["blocklist_entry"])
    vector = review.client.vectors.get("acme:clean")
    assert added is not None and vector is not None
    assert added.category == "sexual" and added.sha256 == vector.sha256 and added.checkpoint == vector.checkpoint
    assert added.tenant == "acme", "a block lists the upload in its tenant's blocklist"
    assert escalated.status_code == 200 and queue["acme:bad-2"]["review_state"] == "escalated"


def test_media_is_served_inert_and_thumbnails_are_reencoded(review: Review, flagged: dict[str, dict[str, Any]]) -> None:
    hostile = b"<script>alert(1)</script><img src=x onerror=alert(2)>"
    name = 'x"<img src=x onerror=alert(1)>\n.txt'
    record = review.upload(review.acme, name, hostile, "hostile")
    assert record["status"] == "indexed", record
    with review.as_(review.acme) as http:
        original = http.get("/v1/uploads/clean/media")
        text = http.get("/v1/uploads/hostile/media")
        thumb = http.get("/v1/uploads/clean/thumbnail", params={"size": 64})
        audio_thumb = http.get("/v1/uploads/tone/thumbnail")
        audio = http.get("/v1/uploads/tone/media")
    assert original.status_code == 200 and original.content == png(100)
    assert original.headers["content-type"] == "image/png"
    for reply in (original, text, thumb, audio):
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in reply.headers["content-security-policy"]
        assert "sandbox" in reply.headers["content-security-policy"]
    assert original.headers["content-disposition"].startswith("attachment;")
    assert text.headers["content-type"] == "text/plain; charset=utf-8" and text.content == hostile
    disposition = text.headers["content-disposition"]
    assert re.fullmatch(r"attachment; filename=\"[A-Za-z0-9._-]+\"; filename\*=UTF-8''[A-Za-z0-9%._-]+", disposition)
    assert thumb.headers["content-type"] == "image/jpeg"
    decoded = Image.open(io.BytesIO(thumb.content))
    assert decoded.format == "JPEG" and max(decoded.size) == 64
    assert audio.headers["content-type"] == "audio/wav" and audio.content == WAV
    assert audio_thumb.status_code == 404 and audio_thumb.json()["reason"] == "no_thumbnail"
    with review.as_(review.beta) as http:
        for path in ("/v1/uploads/acme:clean/media", "/v1/uploads/acme:clean/thumbnail"):
            assert http.get(path).status_code == 404


def test_a_video_gets_a_jpeg_poster_of_its_middle_frame_and_a_broken_one_a_clear_4xx(review: Review) -> None:
    video = video_bytes(seconds=3, fps=10, width=96, height=48)  # 2:1, frame i grey at frame_level(i)
    record = review.upload(review.acme, "clip.mp4", video, "clip")
    assert record["status"] == "indexed" and record["modality"] == "video", record
    with review.as_(review.acme) as http:
        poster = http.get("/v1/uploads/clip/thumbnail", params={"size": 64})
        media = http.get("/v1/uploads/clip/media")
    assert poster.status_code == 200, poster.text
    assert poster.headers["content-type"] == "image/jpeg" and poster.headers["x-content-type-options"] == "nosniff"
    assert poster.content != video and poster.content[:3] == b"\xff\xd8\xff"  # re-encoded, not the upload
    image = Image.open(io.BytesIO(poster.content))
    assert image.format == "JPEG" and image.size == (64, 32)  # the 96x48 video's aspect ratio, within 64
    # The middle frame (15 of 30): its grey level, not the first frame's (the white square
    # in the top-left quarter left out).
    level = float(np.asarray(image.convert("L"))[20:, 36:].mean())
    assert abs(level - frame_level(15)) < 12 and abs(level - frame_level(0)) > 20
    assert media.headers["content-type"] == "video/mp4" and media.content == video
    # The stored file turns hostile (bytes that still sniff as MP4 but hold no video): a
    # clear 4xx with its reason, never a 500 (and nothing of the file served inline).
    ref = review.client.status("acme:clip").object  # type: ignore[union-attr]
    assert ref is not None
    review.client.objects.put(ref.bucket, ref.key, video[:32] + bytes(range(256)) * 40)
    with review.as_(review.acme) as http:
        broken = http.get("/v1/uploads/clip/thumbnail")
    assert broken.status_code in (415, 422), broken.text
    assert broken.json()["reason"] in ("corrupt_video", "truncated_video", "unsupported_codec", "no_video_stream")
    with review.as_(review.beta) as http:
        assert http.get("/v1/uploads/acme:clip/thumbnail").status_code == 404


def test_dead_letters_are_listed_and_retried_for_their_tenant_only(review: Review) -> None:
    broken = png(7)[:120]  # a PNG header, then nothing: sniffs fine, cannot decode
    record = review.upload(review.acme, "broken.png", broken, "broken")
    assert record["status"] == "failed" and record["error_reason"] == "corrupt_image"
    with review.as_(review.beta) as http:
        assert http.get("/v1/dead-letters").json() == {"items": [], "next_cursor": None}
    with review.as_(review.acme) as http:
        letters = http.get("/v1/dead-letters").json()["items"]
    mine = [letter for letter in letters if letter["upload_id"] == "acme:broken"]
    assert len(mine) == 1 and mine[0]["reason"] == "corrupt_image" and mine[0]["stage"] == "preprocess"
    entry_id = mine[0]["entry_id"]
    with review.as_(review.beta) as http:
        refused = http.post(f"/v1/dead-letters/{entry_id}/retry")
    assert refused.status_code == 404 and refused.json()["reason"] == "dead_letter_not_found"
    assert review.client.dead_letters.get(entry_id) is not None  # untouched
    with review.as_(review.acme) as http:
        retried = http.post(f"/v1/dead-letters/{entry_id}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["outcome"] == "requeued" and retried.json()["upload_id"] == "acme:broken"
        again = wait_finished(http, "broken")
    assert again["run"] == 2 and again["status"] == "failed"  # the same bytes fail again
    assert review.client.dead_letters.get(entry_id) is None


def test_delete_removes_object_status_and_vector_for_its_tenant_only(review: Review) -> None:
    record = review.upload(review.acme, "gone.png", png(55), "gone")
    assert record["status"] == "indexed"
    ref = review.client.status("acme:gone").object  # type: ignore[union-attr]
    assert ref is not None
    assert review.client.redis.exists("omnibind:decisions:upload:acme:gone")  # the pipeline's decision
    with review.as_(review.beta) as http:
        assert http.delete("/v1/uploads/acme:gone").status_code == 404
    assert review.client.objects.get(ref, max_bytes=10**6) == png(55)
    with review.as_(review.acme) as http:
        reply = http.delete("/v1/uploads/gone")
        assert reply.status_code == 202, reply.text
        assert reply.json() == {"id": "acme:gone", "object_deleted": True, "status": "deleting"}
        assert http.get("/v1/uploads/gone").status_code == 404
        assert http.get("/v1/uploads/gone/media").status_code == 404
        assert "acme:gone" not in ids(http.get("/v1/uploads").json())
    assert not review.client.redis.exists("omnibind:decisions:upload:acme:gone")
    wait_until(
        lambda: review.client.vectors.get("acme:gone") is None,
        timeout_s=FINISH_TIMEOUT_S,
        what="the vector record to be deleted",
        poll_s=0.2,
    )
    with pytest.raises(ObjectNotFound):
        review.client.objects.get(ref, max_bytes=10**6)


def test_a_decision_on_a_failed_upload_is_refused_with_409(review: Review) -> None:
    record = review.upload(review.acme, "broken2.png", png(8)[:120], "broken-2")
    assert record["status"] == "failed"
    with review.as_(review.acme) as http:
        reply = http.post("/v1/uploads/broken-2/decision", json={"action": "approve"})
    assert reply.status_code == 409 and reply.json()["reason"] == "not_indexed"
    assert json.loads(json.dumps(reply.json()))["message"]


def test_moderators_decisions_give_precision_and_recall_per_category(
    review: Review, flagged: dict[str, dict[str, Any]]
) -> None:
    """After the decisions above: bad-1 approved (safe), clean blocked as sexual, bad-2
    escalated (left out). Scores under the calm policy's thresholds: nothing predicted."""
    with review.as_(review.acme) as http:
        accuracy = http.get("/v1/review/accuracy").json()
    with review.as_(review.beta) as http:
        assert http.get("/v1/review/accuracy").json() == {"reviewed": 0, "categories": []}
    with review.as_(review.acme_reader) as http:
        assert http.get("/v1/review/accuracy").status_code == 403
    assert accuracy["reviewed"] >= 2
    sexual = next(row for row in accuracy["categories"] if row["category"] == "sexual")
    assert sexual["modality"] == "image" and sexual["positives"] == 1 and sexual["negatives"] >= 1
    assert sexual["review"]["threshold"] == 0.98 and sexual["review"]["recall"] == 0.0
    assert sexual["review"]["precision"] is None  # no score reaches 0.98: nothing predicted

    settings = review.client.settings
    env = {
        "OMNIBIND_REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
        "OMNIBIND_DATA_DIR": str(settings.data_dir),
        "OMNIBIND_MODEL__NAME": "tiny",
        "OMNIBIND_MODERATION__POLICY": str(settings.moderation.policy),
    }
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        result = CliRunner().invoke(cli, ["calibrate", "--reviewed", "--tenant", "acme", "--json"], env=env)
    finally:  # the command configures the root logger
        root.setLevel(level)
        root.handlers[:] = handlers
    assert result.exit_code == 0, result.output
    curves = {(c["category"], c["modality"]): c for c in json.loads(result.stdout)}
    assert curves[("sexual", "image")]["positives"] == 1
    assert [p["threshold"] for p in curves[("sexual", "image")]["points"]][:2] == [0.05, 0.1]
