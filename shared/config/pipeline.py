"""What the workers accept, how they retry and recover, and how the index stage batches."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LimitSettings(BaseModel):
    max_bytes: int = Field(100 * 1024 * 1024, ge=1, description="largest upload accepted, in bytes")
    max_pixels: int = Field(64_000_000, ge=1, description="largest image (width x height), checked before decoding")
    max_audio_s: float = Field(600.0, gt=0, description="longest audio accepted, in seconds")
    max_text_chars: int = Field(20_000, ge=1, description="longest text accepted, in characters")
    max_video_s: float = Field(14_400.0, gt=0, description="longest video accepted, in seconds (headers and frames)")
    max_video_pixels: int = Field(
        36_000_000,
        ge=1,
        description="largest video frame (coded width x height; 8K is 35.4 M), checked before decoding",
    )
    max_video_fps: float = Field(240.0, gt=0, description="highest video frame rate accepted (frames per second)")
    max_video_frames_decoded: int = Field(
        3_000,
        ge=10,
        description="most frames decoded to reach a video's 10 sampled frames (seeking goes to the keyframe before "
        "each; more means keyframes far apart)",
    )
    video_decode_budget_s: float = Field(
        60.0, gt=0, description="longest a video's frames may take to decode (CPU seconds of wall time) before it fails"
    )


class IndexSettings(BaseModel):
    max_batch: int = Field(64, ge=1, description="records written to the vector store in one call")
    max_wait_ms: float = Field(
        50.0,
        ge=0,
        description="longest a record waits for company (at once when none is in sight: see docs/performance.md)",
    )
    recycle_rss_mb: int = Field(
        1024,
        ge=0,
        description="the index worker finishes its tasks and exits once its RSS passes this, and its supervisor "
        "starts a fresh one (bounds lancedb's native growth: docs/vectors.md); 0 = never",
    )


class WorkerSettings(BaseModel):
    kind: Literal["cpu", "gpu", "index", "speech"] | None = Field(None, description="set by `omnibind worker KIND`")
    cpu_concurrency: int = Field(0, description="0 = one process per core")
    visibility_timeout_s: float = Field(
        300.0,
        gt=0,
        description="a reserved message unacked this long is given to another worker (and a killed worker's "
        "messages come back after it); must exceed retry_backoff_max_s + 2 x task_time_limit_s",
    )
    task_time_limit_s: float = Field(120.0, gt=0, description="hard limit per task (batch waits included)")
    unacked_restore_interval_s: float = Field(5.0, description="how often workers look for a dead worker's messages")
    max_deliveries: int = Field(5, ge=1, description="a stage that crashed its worker this often is dead-lettered")
    retry_for_s: float = Field(
        600.0,
        gt=0,
        description="a stage retries a transient failure (storage, vector store or Redis down...) for this long "
        "after its first failure, then dead-letters the upload; covers the documented 2-minute outage with margin",
    )
    max_retries: int = Field(
        1000,
        ge=0,
        description="safety cap on the retries of one stage (retry_for_s is the budget; this only stops a "
        "runaway loop)",
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles each retry (with jitter)")
    retry_backoff_max_s: float = Field(
        50.0, gt=0, description="longest retry delay (a waiting retry is held by a worker, unacked)"
    )
    stall_timeout_s: float = Field(
        300.0,
        gt=0,
        description="an unfinished upload without progress this long, whose message is neither queued nor held "
        "by a worker (lost in a crash), is sent again",
    )
    sweep_interval_s: float = Field(
        30.0,
        ge=0,
        description="how often one worker looks for such uploads and for dead letters to re-drive; 0 = never",
    )
    redrive_max: int = Field(
        3,
        ge=0,
        description="the sweeper sends an upload dead-lettered for a transient reason (a dependency down) again "
        "once that dependency answers, at most this many times per upload; 0 = never",
    )
    max_child_memory_mb: int = Field(
        0,
        ge=0,
        description="a CPU worker process whose resident memory passes this is killed at once, like an OOM kill "
        "(its upload is redelivered, then dead-lettered as poison); 0 = no limit",
    )
