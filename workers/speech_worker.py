"""Entry point of a speech worker: `celery -A workers.speech_worker worker -Q speech ...` (what
`omnibind worker speech` runs).

The worker app of `workers.app`, given the Whisper runtime: the one worker module that imports
faster-whisper (through `workers.whisper`), so a cpu, gpu or index worker never loads it.
"""

from __future__ import annotations

from workers.app import app
from workers.whisper import WhisperRunner

app.use_speech_runner(WhisperRunner.from_settings)

__all__ = ["app"]
