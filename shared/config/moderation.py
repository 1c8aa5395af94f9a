"""Moderation scoring and its detectors."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ModerationSettings(BaseModel):
    enabled: bool = Field(True, description="score uploads for moderation")
    policy: Path | None = Field(
        None,
        description="policy file (default: the one shipped with omnibind); `[models.NAME]` sections hold "
        "one model's thresholds (docs/moderation.md)",
    )
    tenant_policies: dict[str, Path] = Field(
        default={}, description='per-tenant policy files, JSON {"acme": "/etc/omnibind/acme.toml"}; others use `policy`'
    )
    nudenet: bool = Field(False, description="run the NudeNet image detector in the CPU stage (omnibind[detectors])")
    profanity: bool = Field(
        False, description="run the abusive-language text classifier in the CPU stage (omnibind[detectors])"
    )
    detector_max_crashes: int = Field(
        2, ge=1, description="after this many worker crashes while detecting, an upload skips the detectors"
    )
    join_ttl_s: float = Field(
        86400.0, gt=0, description="how long detector results wait for their upload's embedding (and back)"
    )
    blocklist_refresh_s: float = Field(1.0, ge=0, description="workers look for blocklist changes at most this often")
    decisions_maxlen: int = Field(
        50_000, ge=1, description="approximate length cap of the decision log stream (~2.7 KB an entry)"
    )

    @property
    def detectors(self) -> tuple[str, ...]:
        """Names of the enabled detectors."""
        return tuple(name for name, on in (("nudenet", self.nudenet), ("profanity", self.profanity)) if on)
