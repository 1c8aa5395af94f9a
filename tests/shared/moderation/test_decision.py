from __future__ import annotations

from shared.events import Band, Modality
from shared.moderation.blocklist_index import BlocklistMatch
from shared.moderation.decision import Evidence, decide, describe_signal
from shared.moderation.detectors import DetectorResult
from shared.moderation.policy import parse_policy
from tests.shared.moderation.policies import BASE

DETECTING = BASE + (
    '[categories.violence.detectors.nudenet]\nlabels = ["FACE_FEMALE", "FACE_MALE"]\nreview = 0.4\nblock = 0.9\n'
)


def test_thresholds_put_each_category_in_its_band_and_record_margins() -> None:
    policy = parse_policy(BASE)
    decision = decide(
        policy, Evidence(Modality.TEXT, zero_shot={"violence": 0.85, "spam": 0.7}), model="m", checkpoint="c"
    )
    assert decision.flagged
    assert decision.categories == ("spam", "violence")
    assert decision.bands == {"violence": Band.BLOCK, "spam": Band.REVIEW}
    assert decision.action is Band.BLOCK
    by_category = {s.category: s for s in decision.reasons}
    assert abs(by_category["violence"].margin - 0.05) < 1e-9
    assert abs(by_category["spam"].margin - 0.1) < 1e-9
    assert (by_category["spam"].review, by_category["spam"].block) == (0.6, 0.9)
    assert decision.policy_version == policy.version and decision.model == "m" and decision.checkpoint == "c"
    assert describe_signal(by_category["violence"]) == "violence: zeroshot text 0.850 >= block 0.8 (+0.050)"


def test_scores_below_review_are_allowed_but_kept_with_their_thresholds() -> None:
    decision = decide(parse_policy(BASE), Evidence(Modality.TEXT, zero_shot={"violence": 0.2, "spam": 0.59}))
    assert not decision.flagged and decision.categories == () and decision.action is Band.ALLOW
    assert decision.scores == {"violence": 0.2, "spam": 0.59}
    assert {s.category for s in decision.signals} == {"violence", "spam"}
    assert decision.reasons == ()


def test_detector_scores_fire_their_category_and_failures_are_noted() -> None:
    policy = parse_policy(DETECTING)
    evidence = Evidence(
        Modality.IMAGE,
        zero_shot={"violence": 0.1},
        detectors=(DetectorResult("nudenet", {"FACE_FEMALE": 0.72, "FEET_EXPOSED": 0.3}),),
    )
    decision = decide(policy, evidence)
    assert decision.categories == ("violence",) and decision.bands["violence"] is Band.REVIEW
    (reason,) = decision.reasons
    assert (reason.source, reason.name, reason.score) == ("nudenet", "FACE_FEMALE", 0.72)
    assert decision.detector_scores == {"nudenet": {"FACE_FEMALE": 0.72, "FEET_EXPOSED": 0.3}}

    failed = decide(policy, Evidence(Modality.IMAGE, detectors=(DetectorResult("nudenet", error="boom"),)))
    assert not failed.flagged
    assert failed.notes == ("detector nudenet failed: boom",)


def test_blocklist_matches_block_with_the_entry_id_and_how_it_matched() -> None:
    policy = parse_policy(BASE)
    matches = (
        BlocklistMatch("bl-exact", "spam", 0.0, exact=True),
        BlocklistMatch("bl-near", "violence", 0.03, exact=False),
    )
    decision = decide(policy, Evidence(Modality.IMAGE, blocklist=matches))
    assert decision.bands["spam"] is Band.BLOCK and decision.bands["violence"] is Band.BLOCK
    details = {s.name: s.detail for s in decision.reasons}
    assert details["bl-exact"] == "same SHA-256 as the listed example"
    assert details["bl-near"] == "cosine distance 0.0300 <= 0.05"


def test_a_detector_score_from_a_videos_frame_names_the_frames_time() -> None:
    policy = parse_policy(DETECTING)
    frames = DetectorResult("nudenet", {"FACE_FEMALE": 0.72, "FACE_MALE": 0.2}, at_s={"FACE_FEMALE": 5.9})
    decision = decide(policy, Evidence(Modality.VIDEO, detectors=(frames,)))
    (reason,) = decision.reasons
    assert (reason.source, reason.name, reason.detail) == ("nudenet", "FACE_FEMALE", "frame at 5.9 s")
    # an image's score has no time
    image = decide(policy, Evidence(Modality.IMAGE, detectors=(DetectorResult("nudenet", {"FACE_FEMALE": 0.72}),)))
    assert image.reasons[0].detail == ""
