"""Non-English speech with the real multilingual Whisper base that the `multilingual` extra
installs offline (workers/whisper_bundled.py): the language is detected per upload and the
words are transcribed in it, on espeak-ng French, German and Spanish fixtures
(tools/make_speech_fixtures.py). tests/workers/test_speech.py covers the English-only default."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.config import Settings, SpeechSettings
from shared.errors import ConfigError
from shared.media.speech_audio import decode_for_speech
from shared.speech.transcript import Transcript
from workers.speech import resolve_model
from workers.whisper import WhisperRunner
from workers.whisper_bundled import BASE_MODEL_SHA256, BASE_PACKAGES, _join_base, bundled_model_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
for _package in BASE_PACKAGES:
    pytest.importorskip(_package)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> WhisperRunner:
    settings = Settings(
        model={"cache_dir": tmp_path_factory.mktemp("cache")}, speech={"model": "base", "cpu_threads": 2}
    )
    return WhisperRunner.from_settings(settings)


def transcribe(runner: WhisperRunner, name: str) -> Transcript:
    return runner.transcribe(decode_for_speech((FIXTURES / f"{name}.wav").read_bytes(), max_s=1800))


def test_base_is_joined_once_from_its_two_packages_into_the_cache(tmp_path: Path) -> None:
    resolved = resolve_model(SpeechSettings(model="base"), tmp_path)
    model_dir = Path(resolved.path)
    assert model_dir == tmp_path / "whisper" / "bundled" / "base" and resolved.download_root is None
    model_bin = model_dir / "model.bin"
    assert model_bin.stat().st_size == 145_217_532  # part1 + part2, Systran's faster-whisper-base
    assert hashlib.sha256(model_bin.read_bytes()).hexdigest() == BASE_MODEL_SHA256
    assert {p.name for p in model_dir.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    stamp = model_bin.stat().st_mtime_ns
    assert bundled_model_dir("base", tmp_path / "whisper") == model_dir
    assert model_bin.stat().st_mtime_ns == stamp  # not joined again
    # A half-written join (a worker killed mid-copy) is redone, not loaded.
    with model_bin.open("r+b") as f:
        f.truncate(1000)
    assert bundled_model_dir("base", tmp_path / "whisper") == model_dir
    assert model_bin.stat().st_size == 145_217_532


def test_halves_that_do_not_join_into_systran_s_model_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    first, second, out = tmp_path / "one", tmp_path / "two", tmp_path / "out"
    for folder, half in ((first, "model.bin.part1"), (second, "model.bin.part2")):
        folder.mkdir()
        (folder / half).write_bytes(b"not whisper " * 100)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (first / name).write_text("{}")
    with pytest.raises(ConfigError, match="reinstall the `multilingual` extra"):
        _join_base(first, second, out=out)
    assert not (out / "model.bin").exists() and not list(out.glob(".model.bin.*"))


@pytest.mark.parametrize(
    ("name", "language", "words"),
    [
        ("french", "fr", ("bonjour", "tous")),
        ("german", "de", ("guten morgen", "berlin")),
        ("spanish", "es", ("buenos días", "mercado")),
    ],
)
def test_non_english_speech_is_detected_and_transcribed_in_its_language(
    runner: WhisperRunner, name: str, language: str, words: tuple[str, ...]
) -> None:
    transcript = transcribe(runner, name)
    assert transcript.model == "faster-whisper/base"
    assert transcript.language == language, transcript
    assert transcript.language_probability is not None and transcript.language_probability > 0.2
    text = transcript.text.lower()
    assert all(word in text for word in words), text
    assert not any("English-only" in note for note in transcript.notes)
    assert transcript.segments and transcript.segments[0].start_s < transcript.segments[-1].end_s


def test_english_speech_is_still_english_with_the_multilingual_model(runner: WhisperRunner) -> None:
    transcript = transcribe(runner, "threat")
    assert transcript.language == "en" and (transcript.language_probability or 0) > 0.5
    assert "kill you tomorrow" in transcript.text.lower()
