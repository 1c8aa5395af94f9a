"""Entry point of a gpu worker: `celery -A workers.gpu_worker worker -Q gpu ...` (what
`omnibind worker gpu` runs; one worker of every queue starts from `workers.all_worker`).

The worker app of `workers.app`, given the model runner: the one worker module that imports
torch (through `workers.gpu`), so a cpu, index or speech worker — started from
`workers.app` — never loads it.
"""

from __future__ import annotations

from workers.app import app
from workers.gpu import GpuRunner

app.use_gpu_runner(GpuRunner.from_settings)

__all__ = ["app"]
