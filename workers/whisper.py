"""The Whisper runtime of a speech worker: faster-whisper (CTranslate2) loaded once per
process, and one upload's audio -> `Transcript`.

Why faster-whisper and not transformers' Whisper: measured side by side on the same weights
and audio (bench/speech_rtf.py --runtimes, docs/model.md), faster-whisper's int8 ran 5-8x
faster than transformers' Whisper on CPU in a quarter of the memory, with Silero VAD built in
(silence and music are never decoded) and no torch in the speech worker.

The one worker module that imports faster-whisper: the speech worker's entry point
(`workers.speech_worker`) hands `WhisperRunner.from_settings` to the app, so no other kind
of worker loads it; producers never import it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import ctranslate2
from faster_whisper import BatchedInferencePipeline, WhisperModel

from shared.config import Settings, SpeechSettings
from shared.cpus import available_cpus
from shared.errors import ConfigError
from shared.media.speech_audio import SpeechAudio
from shared.speech.transcript import LOW_CONFIDENCE, Segment, Transcript, passages, segment_confidence
from workers.speech import ResolvedModel, resolve_model

log = logging.getLogger(__name__)


def _device_and_type(speech: SpeechSettings) -> tuple[str, int, str]:
    """(device, device index, compute type) for CTranslate2."""
    device, index = speech.device, 0
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device.startswith("cuda:"):
        device, index = "cuda", int(device.split(":", 1)[1])
    compute = speech.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    return device, index, compute


class WhisperRunner:
    """One loaded Whisper model; `transcribe` is safe to call from several threads
    (CTranslate2 serialises on its own; one worker process runs one task at a time anyway)."""

    def __init__(self, model: WhisperModel, resolved: ResolvedModel, speech: SpeechSettings, device: str) -> None:
        self._model = model
        self.resolved = resolved
        self.settings = speech
        self.device = device
        self._batched: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> WhisperRunner:
        speech = settings.speech
        resolved = resolve_model(speech, settings.model.cache_dir)
        device, index, compute = _device_and_type(speech)
        threads = speech.cpu_threads or available_cpus()
        log.info("loading Whisper %s (%s) on %s as %s", resolved.name, resolved.path, device, compute)
        try:
            model = WhisperModel(
                resolved.path,
                device=device,
                device_index=index,
                compute_type=compute,
                cpu_threads=threads,
                download_root=resolved.download_root,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot load Whisper model {speech.model!r}: {exc}") from exc
        return cls(model, resolved, speech, device)

    @property
    def model_name(self) -> str:
        return f"faster-whisper/{self.resolved.name}"

    def transcribe(self, audio: SpeechAudio) -> Transcript:
        """The transcript of `audio` (already cut to the cap by the decoder)."""
        speech = self.settings
        kwargs: dict[str, Any] = {
            "language": speech.language,
            "beam_size": speech.beam_size,
            "vad_filter": speech.vad,
            "condition_on_previous_text": False,  # one hallucination must not seed the next segment
        }
        if self.device == "cuda":
            segments_iter, info = self._batched_pipeline().transcribe(
                audio.samples, batch_size=speech.batch_size, **kwargs
            )
        else:
            segments_iter, info = self._model.transcribe(audio.samples, **kwargs)
        decoded = [s for s in segments_iter if s.text.strip()]  # decoding happens while iterating
        segments = tuple(
            Segment(round(s.start, 2), round(s.end, 2), s.text.strip(), segment_confidence(s.avg_logprob))
            for s in decoded
        )
        # Whisper re-decodes a segment by sampling (temperature > 0) when greedy decoding failed
        # its own checks (repetition, low log-probability): its words are a guess either way.
        sampled = sum(1 for s in decoded if (getattr(s, "temperature", 0.0) or 0.0) > 0)
        notes: list[str] = []
        cap_s = speech.max_minutes * 60
        if audio.duration_s > audio.decoded_s + 0.5:
            notes.append(
                f"only the first {audio.decoded_s / 60:.1f} min of {audio.duration_s / 60:.1f} min were transcribed "
                f"(OMNIBIND_SPEECH__MAX_MINUTES={speech.max_minutes:g}); the rest was not"
            )
        speech_s = float(getattr(info, "duration_after_vad", audio.decoded_s) or 0.0)
        if not segments:
            notes.append("no speech found" if speech_s < 0.1 else "speech-like sound, but no words recognised")
        transcript = Transcript(
            model=self.model_name,
            language=info.language,
            language_probability=round(float(info.language_probability), 4),
            segments=segments,
            duration_s=audio.duration_s,
            transcribed_s=round(min(audio.decoded_s, cap_s), 3),
            speech_s=round(speech_s, 3),
            passages=passages(segments, max_words=speech.passage_words),
        )
        confidence = transcript.confidence
        low = confidence is not None and confidence < LOW_CONFIDENCE
        if low or sampled:
            english_only = self.resolved.name.endswith(".en")
            why = (
                f"low transcript confidence {confidence:.2f}"
                if low and confidence is not None
                else f"Whisper's greedy decoding failed its checks on {sampled} of {len(decoded)} segments"
            )
            notes.append(
                f"{why}: the words may not be what was said"
                + (" (the model is English-only; the speech may be in another language)" if english_only else "")
            )
        return dataclasses.replace(transcript, notes=tuple(notes))

    def _batched_pipeline(self) -> Any:
        with self._lock:
            if self._batched is None:
                self._batched = BatchedInferencePipeline(model=self._model)
            return self._batched
