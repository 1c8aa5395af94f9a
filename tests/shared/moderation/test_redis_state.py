"""Moderation state kept in a real redis-server: prompt embedding cache, blocklist, the
detector/embedding join, the decision log."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from shared.events import Band, Modality
from shared.moderation.blocklist import Blocklist, BlocklistCache, BlocklistEntry, entry_id_for
from shared.moderation.log import DecisionLog
from shared.moderation.moderator import Moderator
from shared.moderation.policy import parse_policy
from shared.moderation.prompts import PromptEmbeddings, PromptRequest, PromptStore, PromptsUnavailable
from shared.redis_client import redis_client
from tests.shared.moderation.policies import BASE
from workers.join_store import DETECTORS_PART, EMBEDDED_PART, SPEECH_PART, DetectorGuard, Join

SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis_client(redis_url)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def prompt_embeddings(policy_version: str, checkpoint: str, prompts: list[str], dim: int = 32) -> PromptEmbeddings:
    rng = np.random.default_rng(0)
    matrix = np.stack([unit(rng.standard_normal(dim)) for _ in prompts])
    return PromptEmbeddings(policy_version, checkpoint, "tiny", tuple(prompts), matrix)


def moderator_for(client: redis.Redis, requests: list[PromptRequest]) -> Moderator:
    policy = parse_policy(BASE)
    cache = BlocklistCache(Blocklist(client), refresh_s=0)
    return Moderator(policy, PromptStore(client), cache, request_prompts=requests.append)


def test_prompt_cache_is_keyed_by_policy_version_and_checkpoint(client: redis.Redis) -> None:
    store = PromptStore(client)
    stored = prompt_embeddings("v1", "ckpt-a", ["x", "y"])
    store.put(stored)
    again = store.get("v1", "ckpt-a")
    assert again is not None and again.prompts == ("x", "y")
    np.testing.assert_array_equal(again.matrix, stored.matrix)
    assert store.get("v1", "ckpt-b") is None
    assert store.get("v2", "ckpt-a") is None


def test_missing_prompts_are_requested_once_then_used_from_redis_and_cached(client: redis.Redis) -> None:
    requests: list[PromptRequest] = []
    moderator = moderator_for(client, requests)
    policy = moderator.policy
    vector = unit(np.ones(32))
    for _ in range(2):
        with pytest.raises(PromptsUnavailable):
            moderator.moderate(modality=Modality.TEXT, vector=vector, sha256=None, model="tiny", checkpoint="ck")
    assert [r.policy_version for r in requests] == [policy.version], "one request, however many uploads wait"
    assert set(requests[0].prompts) == set(policy.prompt_texts())

    PromptStore(client).put(prompt_embeddings(policy.version, "ck", list(requests[0].prompts)))
    decision = moderator.moderate(modality=Modality.TEXT, vector=vector, sha256=None, model="tiny", checkpoint="ck")
    assert set(decision.scores) == {"violence", "spam"}
    assert all(0.0 <= s <= 1.0 for s in decision.scores.values())
    assert decision.policy_version == policy.version and decision.checkpoint == "ck"

    client.flushall()  # the process keeps what it read: no Redis round trip per upload
    moderator.moderate(modality=Modality.TEXT, vector=vector, sha256=None, model="tiny", checkpoint="ck")
    with pytest.raises(PromptsUnavailable):  # another checkpoint needs its own embeddings
        moderator.moderate(modality=Modality.TEXT, vector=vector, sha256=None, model="tiny", checkpoint="other")


def test_blocklist_matches_exact_sha_without_vector_and_near_duplicates_by_distance(client: redis.Redis) -> None:
    blocklist = Blocklist(client)
    listed = unit(np.arange(1, 33, dtype=np.float32))
    blocklist.add(BlocklistEntry(id=entry_id_for(SHA_A), category="violence", sha256=SHA_A, modality=Modality.IMAGE))
    blocklist.add(
        BlocklistEntry(
            id=entry_id_for(SHA_B),
            category="spam",
            sha256=SHA_B,
            modality=Modality.IMAGE,
            checkpoint="ck",
            model="tiny",
        ),
        listed,
    )
    assert [e.id for e in blocklist.entries()] == [entry_id_for(SHA_A), entry_id_for(SHA_B)]
    index = BlocklistCache(blocklist, refresh_s=0).index()

    (exact,) = index.match(sha256=SHA_A, vector=None, checkpoint=None, max_distance=0.05)
    assert exact.exact and exact.category == "violence"

    near = unit(listed + 0.01 * np.random.default_rng(0).standard_normal(32).astype(np.float32))
    (match,) = index.match(sha256="c" * 64, vector=near, checkpoint="ck", max_distance=0.05)
    assert match.entry_id == entry_id_for(SHA_B) and not match.exact and 0 < match.distance <= 0.05
    assert index.match(sha256="c" * 64, vector=near, checkpoint="other-ckpt", max_distance=0.05) == []
    far = unit(-listed)
    assert index.match(sha256="c" * 64, vector=far, checkpoint="ck", max_distance=0.05) == []


def test_blocklist_cache_sees_changes_after_its_refresh_interval(client: redis.Redis) -> None:
    now = [0.0]
    blocklist = Blocklist(client)
    cache = BlocklistCache(blocklist, refresh_s=1.0, clock=lambda: now[0])
    assert len(cache.index()) == 0
    blocklist.add(BlocklistEntry(id="bl-x", category="spam", sha256=SHA_A, modality=Modality.TEXT))
    assert len(cache.index()) == 0, "within the refresh interval the snapshot is reused"
    now[0] = 1.5
    assert len(cache.index()) == 1
    assert blocklist.remove("bl-x") and not blocklist.remove("bl-x")
    now[0] = 3.0
    assert len(cache.index()) == 0


def test_join_completes_once_both_parts_are_there_and_again_on_redelivery(client: redis.Redis) -> None:
    join = Join(client, ttl_s=60)
    assert join.put("u1", "t1", EMBEDDED_PART, "E") is None
    assert join.put("u1", "t2", DETECTORS_PART, "D-other-run") is None, "another run's token never mixes in"
    assert join.put("u1", "t1", DETECTORS_PART, "D") == {EMBEDDED_PART: "E", DETECTORS_PART: "D"}
    assert join.put("u1", "t1", EMBEDDED_PART, "E") == {EMBEDDED_PART: "E", DETECTORS_PART: "D"}
    assert 0 < client.ttl("omnibind:moderation:join:u1:t1") <= 60


def test_a_join_goes_by_the_parts_its_run_opened_it_with_not_by_each_message_s_list(client: redis.Redis) -> None:
    join = Join(client, ttl_s=60)
    join.open("u2", "t1", (EMBEDDED_PART, SPEECH_PART))
    join.open("u2", "t1", (EMBEDDED_PART, DETECTORS_PART))  # only the first list counts
    assert join.put("u2", "t1", SPEECH_PART, "S", (EMBEDDED_PART, SPEECH_PART)) is None
    # a message naming other parts (the default list) completes it all the same
    assert join.put("u2", "t1", EMBEDDED_PART, "E", (DETECTORS_PART, EMBEDDED_PART)) == {
        EMBEDDED_PART: "E",
        SPEECH_PART: "S",
    }
    join.open("u2", "t2", (EMBEDDED_PART, DETECTORS_PART, SPEECH_PART))
    assert join.put("u2", "t2", EMBEDDED_PART, "E", (EMBEDDED_PART,)) is None  # nor hands on too early


def test_detector_guard_counts_only_runs_that_never_returned(client: redis.Redis) -> None:
    guard = DetectorGuard(client)
    assert guard.begin("u") == 0
    guard.end("u")
    assert guard.begin("u") == 0  # the finished run does not count
    assert guard.begin("u") == 1  # the previous one never ended (its worker crashed)


def test_decision_log_appends_and_lists_newest_flagged_first(client: redis.Redis) -> None:
    from shared.moderation.decision import Evidence, decide

    policy = parse_policy(BASE)
    log = DecisionLog(client)
    log.append("calm", decide(policy, Evidence(Modality.TEXT, zero_shot={"violence": 0.1})))
    log.append("bad-1", decide(policy, Evidence(Modality.TEXT, zero_shot={"violence": 0.9})))
    log.append("bad-2", decide(policy, Evidence(Modality.TEXT, zero_shot={"spam": 0.7})), source="rescore")
    flagged = log.newest(flagged_only=True)
    assert [e.upload_id for e in flagged] == ["bad-2", "bad-1"]
    assert flagged[0].source == "rescore" and flagged[0].decision.bands["spam"] is Band.REVIEW
    assert [e.upload_id for e in log.newest(upload_id="calm")] == ["calm"]
    assert log.length() == 3


def test_one_uploads_decisions_are_read_from_its_index_not_by_scanning_the_log(client: redis.Redis) -> None:
    from shared.moderation.decision import Evidence, decide

    policy = parse_policy(BASE)
    log = DecisionLog(client, index_ttl_s=3600)
    first = log.append("mine", decide(policy, Evidence(Modality.TEXT, zero_shot={"violence": 0.9})))
    calm = decide(policy, Evidence(Modality.TEXT, zero_shot={"violence": 0.1}))
    for n in range(1200):  # 1,200 decisions of other uploads since
        log.append(f"other-{n}", calm)
    second = log.append("mine", calm, source="rescore")
    client.config_resetstat()
    found = log.newest(upload_id="mine", limit=20)
    assert [(e.entry_id, e.source) for e in found] == [(second, "rescore"), (first, "pipeline")]
    stats = client.info("commandstats")
    # Its two entries read by id; the log itself never walked.
    assert "cmdstat_xrevrange" not in stats and stats["cmdstat_xrange"]["calls"] == 2
    assert 3500 < client.pttl("omnibind:decisions:upload:mine") / 1000 <= 3600
    # An entry gone from the log (trimmed, purged) is skipped; forgetting drops the index.
    client.xdel("omnibind:decisions", second)
    assert [e.entry_id for e in log.newest(upload_id="mine")] == [first]
    log.forget("mine")
    assert not client.exists("omnibind:decisions:upload:mine") and log.newest(upload_id="mine") == []
    assert [e.upload_id for e in log.newest(limit=1)] == ["other-1199"]  # the log itself stays


def test_touch_restarts_the_ttl_of_cached_prompt_embeddings(client: redis.Redis) -> None:
    store = PromptStore(client, ttl_s=1000)
    assert not store.touch("v1", "ck")
    store.put(prompt_embeddings("v1", "ck", ["x"]))
    client.expire("omnibind:moderation:prompts:v1:ck", 5)
    assert store.touch("v1", "ck")
    assert client.ttl("omnibind:moderation:prompts:v1:ck") > 900


def test_a_videos_audio_track_is_scored_with_the_audio_prompts_and_named_in_its_signal(client: redis.Redis) -> None:
    requests: list[PromptRequest] = []
    moderator = moderator_for(client, requests)
    with pytest.raises(PromptsUnavailable):
        moderator.moderate(
            modality=Modality.IMAGE, vector=unit(np.ones(32)), sha256=None, model="tiny", checkpoint="ck"
        )
    prompts = list(requests[0].prompts)
    embeddings = prompt_embeddings(moderator.policy.version, "ck", prompts)
    PromptStore(client).put(embeddings)
    violent_sound = embeddings.matrix[prompts.index("violent sound")]
    safe_image = embeddings.matrix[prompts.index("safe image")]
    decision = moderator.moderate(
        modality=Modality.VIDEO,  # its frames are scored with the image prompts
        vector=safe_image,
        sha256=None,
        model="tiny",
        checkpoint="ck",
        parts={"audio_track": (Modality.AUDIO, violent_sound)},
    )
    track = [s for s in decision.signals if s.detail == "audio_track"]
    assert [(s.category, s.name) for s in track] == [("violence", "audio")]
    assert track[0].band is not Band.ALLOW and "violence" in decision.categories
    frames = [s for s in decision.signals if s.source == "zeroshot" and s.detail == ""]
    assert frames and all(s.name == "image" and s.band is Band.ALLOW for s in frames)


def test_the_worst_sampled_frame_of_a_video_fires_with_its_time(client: redis.Redis) -> None:
    requests: list[PromptRequest] = []
    moderator = moderator_for(client, requests)
    with pytest.raises(PromptsUnavailable):
        moderator.moderate(
            modality=Modality.VIDEO, vector=unit(np.ones(32)), sha256=None, model="tiny", checkpoint="ck"
        )
    prompts = list(requests[0].prompts)
    embeddings = prompt_embeddings(moderator.policy.version, "ck", prompts)
    PromptStore(client).put(embeddings)
    safe = embeddings.matrix[prompts.index("safe image")]
    violent = embeddings.matrix[prompts.index("violent image")]
    frames = [(0.0, safe), (1.9, safe), (7.5, violent), (9.9, safe)]
    # the mean of the frames is mostly safe; the one violent second still fires
    decision = moderator.moderate(
        modality=Modality.VIDEO, vector=safe, sha256=None, model="tiny", checkpoint="ck", frames=frames
    )
    worst = [s for s in decision.signals if s.detail.startswith("frame at")]
    assert [(s.category, s.detail) for s in worst] == [("violence", "frame at 7.5 s")]
    assert worst[0].band is not Band.ALLOW and "violence" in decision.categories
    calm = moderator.moderate(
        modality=Modality.VIDEO, vector=safe, sha256=None, model="tiny", checkpoint="ck", frames=[(0.0, safe)]
    )
    assert not calm.flagged


def test_a_block_in_one_tenant_flags_its_copies_and_never_another_tenants_identical_upload(
    client: redis.Redis,
) -> None:
    """A console/HTTP block lists the upload in its tenant's blocklist (producers.review); an
    operator's `omnibind blocklist add` without --tenant flags every tenant's uploads."""
    from producers.review import blocklist_entry
    from shared.moderation.review import HumanReview, ReviewAction
    from shared.vectors.records import VectorRecord

    moderator = moderator_for(client, [])
    PromptStore(client).put(prompt_embeddings(moderator.policy.version, "ck", list(moderator.policy.prompt_texts())))
    blocked = unit(np.arange(1, 33, dtype=np.float32))
    record = VectorRecord(
        upload_id="acme:bad", vector=blocked, modality=Modality.IMAGE, tenant="acme", sha256=SHA_A, checkpoint="ck"
    )
    entry = blocklist_entry(record, "violence", HumanReview(action=ReviewAction.BLOCK, by="key:k1"))
    assert entry is not None and entry.tenant == "acme" and entry.id == entry_id_for(SHA_A, "acme")
    blocklist = Blocklist(client)
    blocklist.add(entry, blocked)
    blocklist.add(BlocklistEntry(id=entry_id_for(SHA_B), category="spam", sha256=SHA_B, modality=Modality.IMAGE))

    def blocklisted(tenant: str | None, sha256: str) -> list[str]:
        decision = moderator.moderate(
            modality=Modality.IMAGE, vector=blocked, sha256=sha256, model="tiny", checkpoint="ck", tenant=tenant
        )
        return sorted({s.category for s in decision.signals if s.source == "blocklist" and s.band is not Band.ALLOW})

    assert blocklisted("acme", SHA_A) == ["violence"], "the same bytes, and the same embedding, in acme"
    assert blocklisted("acme", "c" * 64) == ["violence"], "a near copy in acme (by embedding)"
    assert blocklisted("beta", SHA_A) == [], "beta's identical upload: acme's block is acme's"
    assert blocklisted(None, SHA_A) == [], "nor an upload without a tenant"
    assert blocklisted("beta", SHA_B) == ["spam"], "the operator-wide list flags every tenant"
    # The same file blocked in beta too is a second entry, not acme's overwritten.
    blocklist.add(entry.model_copy(update={"id": entry_id_for(SHA_A, "beta"), "tenant": "beta"}), blocked)
    assert {e.id for e in blocklist.entries()} == {entry_id_for(SHA_A, t) for t in ("acme", "beta")} | {
        entry_id_for(SHA_B)
    }
    assert blocklisted("beta", SHA_A) == ["violence"]
