"""Entry point of one worker of every queue (`celery -A workers.all_worker worker -Q
cpu,gpu,index,speech`, for a small machine or a trial): the app of `workers.app` given both
the model runner (torch) and the Whisper runtime (faster-whisper)."""

from __future__ import annotations

from workers.app import app
from workers.gpu import GpuRunner
from workers.whisper import WhisperRunner

app.use_gpu_runner(GpuRunner.from_settings)
app.use_speech_runner(WhisperRunner.from_settings)

__all__ = ["app"]
