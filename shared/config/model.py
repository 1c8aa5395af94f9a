"""The embedding model, and how the GPU stage batches it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from shared.config.paths import xdg_dir


class ModelSettings(BaseModel):
    name: Literal["huge", "tiny", "pe-av-small", "pe-av-base", "pe-av-large", "pe-av-tiny"] = Field(
        "huge",
        description="huge = ImageBind (weights CC BY-NC-SA 4.0, non-commercial); pe-av-small/base/large = "
        "Perception Encoder Audio-Visual (weights Apache-2.0, commercial use allowed); tiny / pe-av-tiny = "
        "random weights of either family for offline smoke runs (docs/model.md); on a deployment with an index, "
        "change it with `omnibind reindex --model` (docs/operations.md, 'Switching models')",
    )
    checkpoint: Path | None = Field(
        None,
        description="local checkpoint: an ImageBind file, or a PE-AV directory (config.json, "
        "model.safetensors, tokenizer.json); skips the download",
    )
    revision: str | None = Field(
        None, description="PE-AV: the hub revision (commit) to download; unset = main, then pinned by SHA-256"
    )
    url: str = Field(
        "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
        description="where the checkpoint is downloaded from (once) when no local file is set",
    )
    sha256: str | None = Field(
        None,
        description="expected SHA-256 of the checkpoint (PE-AV: model.safetensors); pinned on first download if unset",
    )
    cache_dir: Path = Field(
        default_factory=lambda: xdg_dir("XDG_CACHE_HOME", ".cache"),
        description="downloaded checkpoint and its pinned SHA-256 (default ~/.cache/omnibind)",
    )
    download_timeout_s: float = Field(
        10.0, gt=0, description="connect/read timeout of the checkpoint download; offline starts fail this fast"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = float32 on CPU, bfloat16 on CUDA"
    )
    audio_mode: Literal["reference", "full"] = Field(
        "reference", description="reference = 3 clips of 2 s as Meta's code; full = clips covering the whole file"
    )


class GpuSettings(BaseModel):
    max_batch: int = Field(0, ge=0, description="largest batch per forward; 0 = auto (64 on CUDA, 8 on CPU)")
    max_wait_ms: float = Field(
        10.0,
        ge=0,
        description="longest an item waits for its batch (none when no company is in sight; docs/performance.md)",
    )
    min_batch_after_oom: int = Field(1, ge=1, description="batches shrink down to this size on CUDA out-of-memory")
