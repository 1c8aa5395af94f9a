"""Moderation through real processes: redis-server, cpu/gpu/index workers (tiny random
model) with the real NudeNet and text-classifier detectors, the CLI as a subprocess.

With the tiny random-weight model every image lands within ~1e-4 cosine distance of every
other, while a resized or re-encoded copy stays within ~1e-7 (float32 noise) of its
original; the near-duplicate test therefore uses ``blocklist.max_distance = 2e-6`` (the
default policy's 0.08 is meant for the real checkpoint). Zero-shot thresholds are set out
of reach (temperature 1 keeps scores in [0.12, 0.88]): the random model's zero-shot scores
mean nothing, so here they are checked for their mechanism only.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from producers.stack import Stack, StackError
from shared.events import Band, Modality, UploadStatus
from shared.moderation.log import DecisionLog
from shared.moderation.policy import load_policy
from shared.streams import ResultStream
from shared.vectors.records import ALL_TENANTS, SearchFilters
from tests.support.stack import SAMPLES, RunningStack, stack_settings

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "moderation"
ABUSIVE = "shut up you worthless idiot, nobody wants your stupid fucking opinion"
NEUTRAL = "The train to Lyon leaves at nine; please bring the blue folder."

POLICY = """
name = "integration"
[scoring]
temperature = 1.0
[blocklist]
max_distance = 0.000002
band = "block"
[contrast]
image = ["an ordinary photo"]
text = ["a friendly message"]
audio = ["calm music"]
[categories.faces]
review = 0.95
block = 0.99
[categories.faces.prompts]
image = ["a portrait photo of a face"]
[categories.faces.detectors.nudenet]
labels = ["FACE_FEMALE", "FACE_MALE"]
review = 0.5
block = 0.95
[categories.harassment]
review = 0.95
block = 0.99
[categories.harassment.prompts]
text = ["an insult directed at a person"]
[categories.harassment.detectors.profanity]
labels = ["offensive"]
review = 0.5
block = 0.9
[categories.spam]
review = 0.95
block = 0.99
[categories.spam.prompts]
image = ["an advertisement"]
text = ["buy now"]
[categories.noise]
review = 0.95
block = 0.99
[categories.noise.prompts]
audio = ["a loud noise"]
"""


def omnibind(args: list[str], running: RunningStack, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=running.cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def resized_png(path: Path) -> bytes:
    image = Image.open(path).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(out, "PNG")
    return out.getvalue()


def test_uploads_get_scores_bands_and_reasons_from_detectors_blocklist_and_zero_shot(
    start_stack, tmp_path: Path
) -> None:
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(POLICY, encoding="utf-8")
    policy = load_policy(policy_path)
    running = start_stack(moderation={"policy": policy_path, "nudenet": True, "profanity": True})
    client = running.client

    listed = SAMPLES / "rgb_landscape_640x427.jpg"
    added = omnibind(["blocklist", "add", str(listed), "--category", "spam", "--note", "known scam"], running)
    assert added.returncode == 0, added.stdout + added.stderr
    entry_id = added.stdout.split()[0]
    assert "bytes and embedding (imagebind-tiny-random)" in added.stdout

    ids = {
        "face": client.submit(FIXTURES / "astronaut_256.jpg"),
        "abusive": client.submit_text(ABUSIVE),
        "neutral": client.submit_text(NEUTRAL),
        "exact_copy": client.submit(listed.read_bytes(), filename="copy.jpg"),
        "resized_copy": client.submit(resized_png(listed), filename="smaller.png"),
        "unrelated": client.submit(SAMPLES / "rgb_500x500.webp"),
        "audio": client.submit(SAMPLES / "tone_16k_1s_mono.wav"),
    }
    finished = client.wait(ids.values(), timeout_s=240)
    assert {name: finished[i].status for name, i in ids.items()} == dict.fromkeys(ids, UploadStatus.INDEXED)
    records = {name: client.vectors.get(upload_id) for name, upload_id in ids.items()}
    moderation = {name: record.moderation for name, record in records.items() if record is not None}
    assert moderation.keys() == ids.keys()

    # NudeNet ran in the CPU stage and its scores land in the record and decide "faces".
    face = moderation["face"]
    assert face.detector_scores["nudenet"]["FACE_FEMALE"] > 0.5
    assert face.categories == ("faces",) and face.bands["faces"] is Band.REVIEW
    assert [(r.source, r.name) for r in face.reasons] == [("nudenet", "FACE_FEMALE")]

    # The text classifier flags the abusive sentence, not the neutral one.
    assert moderation["abusive"].detector_scores["profanity"]["offensive"] > 0.9
    assert moderation["abusive"].bands["harassment"] is Band.BLOCK and moderation["abusive"].flagged
    assert moderation["neutral"].detector_scores["profanity"]["offensive"] < 0.5
    assert not moderation["neutral"].flagged

    # Blocklist: the exact copy by SHA-256, the resized PNG by embedding distance.
    exact, near = moderation["exact_copy"], moderation["resized_copy"]
    assert exact.categories == ("spam",) and exact.action is Band.BLOCK
    assert exact.reasons[0].name == entry_id and "same SHA-256" in exact.reasons[0].detail
    assert near.categories == ("spam",) and near.reasons[0].name == entry_id
    assert "cosine distance" in near.reasons[0].detail
    assert not moderation["unrelated"].flagged

    # Zero-shot mechanism: a score in [0, 1] per category prompted for the modality, with
    # the policy version and checkpoint recorded.
    assert set(moderation["audio"].scores) == {"noise"} and set(moderation["face"].scores) == {"faces", "spam"}
    for decision in moderation.values():
        assert all(0.0 <= s <= 1.0 for s in decision.scores.values())
        assert decision.policy_version == policy.version
        assert decision.model == "imagebind-tiny-random" and decision.checkpoint == records["face"].checkpoint

    # Status record, result stream, search filter and decision log agree.
    status = client.status(ids["abusive"])
    assert status is not None and status.flagged and status.categories == ("harassment",)
    assert UploadStatus.MODERATED in status.timestamps
    assert status.extra["moderation"]["action"] == "block"  # type: ignore[index]
    results = {e.result.upload_id: e.result for e in ResultStream(client.redis, running.settings.queue_prefix).read()}
    assert results[ids["face"]].flagged and results[ids["face"]].categories == ("faces",)
    assert not results[ids["neutral"]].flagged
    flagged_ids = {ids[n] for n in ("face", "abusive", "exact_copy", "resized_copy")}
    assert client.vectors.count(SearchFilters(scope=ALL_TENANTS, flagged=True)) == len(flagged_ids)
    log = DecisionLog(client.redis, running.settings.queue_prefix)
    assert {e.upload_id for e in log.newest(limit=100, flagged_only=True)} == flagged_ids

    listing = omnibind(["flagged", "-n", "10"], running)
    assert listing.returncode == 0, listing.stderr
    assert ids["resized_copy"] in listing.stdout and f"blocklist {entry_id}" in listing.stdout
    why = omnibind(["explain", ids["face"]], running)
    assert "faces: nudenet FACE_FEMALE" in why.stdout and "FLAGGED" in why.stdout

    listed_entries = omnibind(["blocklist", "list"], running)
    row = next(line for line in listed_entries.stdout.splitlines() if line.startswith(entry_id))
    assert row.split()[1:3] == ["*", "spam"] and "known scam" in row  # operator-wide: every tenant

    # Calibration on a labelled folder: precision/recall per category and modality.
    labelled = tmp_path / "labelled"
    (labelled / "spam").mkdir(parents=True)
    (labelled / "safe").mkdir()
    (labelled / "spam" / "ad.jpg").write_bytes(listed.read_bytes())
    (labelled / "safe" / "calm.webp").write_bytes((SAMPLES / "rgb_500x500.webp").read_bytes())
    (labelled / "safe" / "hello.txt").write_text(NEUTRAL, encoding="utf-8")
    calibrated = omnibind(["calibrate", str(labelled), "--thresholds", "0.0,0.99"], running)
    assert calibrated.returncode == 0, calibrated.stdout + calibrated.stderr
    assert "spam (image): 1 positive, 1 negative; policy review 0.95, block 0.99" in calibrated.stdout
    assert "       0.00       0.50    1.00" in calibrated.stdout  # both images score >= 0: precision 1/2

    # Rescore under a stricter policy: no re-embedding, only the new prompts are embedded.
    strict_path = tmp_path / "strict.toml"
    strict_path.write_text(POLICY.replace("[categories.noise]\nreview = 0.95", "[categories.noise]\nreview = 0.0"))
    dry = omnibind(["rescore", "--policy", str(strict_path), "--dry-run"], running)
    assert dry.returncode == 0 and "would change" in dry.stdout, dry.stdout + dry.stderr
    assert client.vectors.get(ids["audio"]).moderation.policy_version == policy.version  # type: ignore[union-attr]
    rescored = omnibind(["rescore", "--policy", str(strict_path)], running)
    assert rescored.returncode == 0, rescored.stdout + rescored.stderr
    assert f"{len(ids)} records, changed {len(ids)}; flagged {len(flagged_ids)} -> {len(flagged_ids) + 1}" in (
        rescored.stdout
    )
    audio = client.vectors.get(ids["audio"])
    assert audio is not None and audio.moderation.categories == ("noise",)
    assert audio.moderation.policy_version == load_policy(strict_path).version
    assert audio.modality is Modality.AUDIO
    assert log.newest(limit=1, upload_id=ids["audio"])[0].source == "rescore"


def test_a_malformed_policy_stops_workers_and_the_cli_at_start_up_naming_the_field(
    tmp_path: Path, redis_url: str, model_cache: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(POLICY.replace("[categories.faces]\nreview = 0.95", "[categories.faces]\nreview = 1.5"))
    settings = stack_settings(tmp_path / "stack", model_cache, redis_url=redis_url, moderation={"policy": bad})
    (tmp_path / "logs").mkdir()
    with pytest.raises(StackError) as caught:
        Stack(settings, kinds=("index",), log_dir=tmp_path / "logs").start(ready_timeout_s=120)
    assert "exited with code 3" in str(caught.value)
    assert "categories.faces.review" in str(caught.value)

    env = {**Stack(settings).child_env(), "OMNIBIND_MODERATION__POLICY": str(bad)}
    cli = subprocess.run(
        [sys.executable, "-m", "producers.cli", "rescore"], env=env, capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 1 and "categories.faces.review" in cli.stderr and "Traceback" not in cli.stderr
