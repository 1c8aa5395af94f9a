"""Who may submit how much: daily quotas, backpressure and fairness between tenants."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from shared.tenancy import valid_tenant


class TenantQuota(BaseModel):
    uploads_per_day: int | None = Field(None, ge=0, description="uploads a day; unset = the default, 0 = no limit")
    bytes_per_day: int | None = Field(None, ge=0, description="bytes a day; unset = the default, 0 = no limit")


class QuotaSettings(BaseModel):
    """Per-tenant daily quotas (`shared.quotas`): a day is a UTC calendar day."""

    uploads_per_day: int = Field(0, ge=0, description="uploads a tenant may submit per UTC day; 0 = no limit")
    bytes_per_day: int = Field(0, ge=0, description="bytes a tenant may submit per UTC day; 0 = no limit")
    tenants: dict[str, TenantQuota] = Field(
        default={},
        description='per-tenant overrides, JSON {"acme": {"uploads_per_day": 1000, "bytes_per_day": 1000000000}}',
    )

    def for_tenant(self, tenant: str) -> tuple[int, int]:
        """(uploads, bytes) a day for `tenant`; 0 = no limit."""
        override = self.tenants.get(tenant) or TenantQuota()
        uploads = override.uploads_per_day if override.uploads_per_day is not None else self.uploads_per_day
        size = override.bytes_per_day if override.bytes_per_day is not None else self.bytes_per_day
        return uploads, size


class BackpressureSettings(BaseModel):
    """When producers are told to slow down (`shared.backpressure`)."""

    max_cpu_queue: int = Field(
        10_000,
        ge=0,
        description="refuse new uploads while more messages wait in the cpu queue (0 = never); with fair "
        "queues, a tenant's uploads while more of its own wait for their turn",
    )
    # A preprocessed image or audio clip rides the gpu queue inside its message (~0.2 MB):
    # 1,000 waiting is ~200 MB of Redis memory (docs/redis.md "Budget").
    max_gpu_queue: int = Field(
        1_000,
        ge=0,
        description="cpu workers hold off preprocessing while more arrays than this wait in the gpu queue (0 = never)",
    )
    retry_after_s: int = Field(5, ge=1, description="what a refused producer is told to wait (HTTP Retry-After)")
    max_inflight_per_tenant: int = Field(
        0, ge=0, description="refuse a tenant's new uploads while this many of its uploads are unfinished (0 = never)"
    )


class FairnessSettings(BaseModel):
    """Fair queues between tenants in front of the cpu queue (`shared.fair_queue`)."""

    enabled: bool = Field(
        False,
        description="accepted uploads wait in per-tenant queues that a dispatcher in the cpu workers "
        "feeds to the pipeline in weighted round robin (off: straight into the cpu queue, FIFO)",
    )
    window: int = Field(
        2,
        ge=1,
        description="dispatched uploads a tenant may have unfinished at once (x its weight); "
        "more of its uploads wait their turn",
    )
    sparse_first: bool = Field(
        True,
        description="while a tenant without a backlog (no more uploads waiting than its window) has uploads "
        "in flight, tenants with a backlog get no new dispatches, so a trickle runs beside as few of a "
        "flood's uploads as possible (as FQ-CoDel serves sparse flows first); and the trickle's uploads are "
        "sent marked sparse, so no gpu or index batcher holds them back for company",
    )
    sparse_hold_max_s: float = Field(
        1.0,
        gt=0,
        description="a tenant with a backlog held back by sparse_first gets an upload dispatched after this "
        "long anyway, so a stream of single uploads from others cannot starve it",
    )
    default_weight: int = Field(1, ge=1, description="a tenant's weight: uploads per pass, and windows it may fill")
    weights: dict[str, int] = Field(default={}, description='per-tenant weights, JSON {"acme": 3}')
    poll_s: float = Field(0.02, gt=0, description="how often a dispatcher with a full window looks again")
    lock_ttl_s: float = Field(5.0, gt=0, description="a dead dispatcher's lock lapses after this; another takes over")
    window_hold_s: float = Field(
        600.0, gt=0, description="a dispatched upload leaves the window after this even if unfinished (lost message)"
    )

    @model_validator(mode="after")
    def _valid_weights(self) -> FairnessSettings:
        invalid = [name for name, weight in self.weights.items() if not valid_tenant(name) or weight < 1]
        if invalid:
            raise ValueError(f"invalid fairness weights for {invalid}: a tenant name and a weight >= 1")
        return self
