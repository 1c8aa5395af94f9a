"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can do its job). Both are
open: no API key, so load balancers and container healthchecks can call them."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Response

from producers.http.models import Check, Health, Readiness
from producers.http.state import ApiState, State
from shared.errors import ObjectNotFound, OmnibindError
from shared.events import ObjectRef
from shared.heartbeat import live_workers
from shared.redis_client import translate_redis_errors

router = APIRouter(tags=["health"])

WORKER_KINDS = ("cpu", "gpu", "index", "speech")
PROBE_KEY = ".omnibind-readyz-probe"  # never written: its absence proves the store answers


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """200 while the process serves requests; checks nothing else."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": Readiness, "description": "Not ready: see which check failed"}},
)
def readyz(response: Response, state: State) -> Readiness:
    """200 when Redis and the object store answer and at least one worker of each kind
    (cpu, gpu, index, and speech while transcripts are enabled: audio uploads wait for it)
    has a fresh heartbeat; else 503 with the failing checks."""
    redis_check, workers = _redis_and_workers(state)
    objects_check = _objects(state)
    needed = [kind for kind in WORKER_KINDS if kind != "speech" or state.settings.speech.enabled]
    ready = redis_check.ok and objects_check.ok and all(workers.get(kind, 0) > 0 for kind in needed)
    response.status_code = 200 if ready else 503
    return Readiness(ready=ready, redis=redis_check, objects=objects_check, workers=workers)


def _redis_and_workers(state: ApiState) -> tuple[Check, dict[str, int]]:
    client = state.client
    try:
        with translate_redis_errors("checking readiness"):
            client.redis.ping()
            beats = live_workers(client.redis, state.settings.queue_prefix)
    except OmnibindError as exc:
        return Check(ok=False, detail=f"{exc.reason}: {exc.message}"), dict.fromkeys(WORKER_KINDS, 0)
    counts = Counter(str(beat.get("kind")) for beat in beats)
    return Check(ok=True), {kind: counts.get(kind, 0) for kind in sorted(set(WORKER_KINDS) | set(counts))}


def _objects(state: ApiState) -> Check:
    try:
        state.client.objects.stat(ObjectRef(bucket=state.settings.objects.bucket, key=PROBE_KEY))
    except ObjectNotFound:
        return Check(ok=True)
    except OmnibindError as exc:
        return Check(ok=False, detail=f"{exc.reason}: {exc.message}")
    return Check(ok=True)
