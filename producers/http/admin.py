"""Admin routes: purge a tenant, read the audit log (role ``admin``).

``POST /v1/admin/tenants/{tenant}/purge`` starts (or continues) the purge of a tenant the
key covers in a thread of this process and answers 202 with its progress at once; ``GET``
on the same path follows it (`producers.purge`: resumable, idempotent). A purge that dies
with this process is continued by posting again. ``GET /v1/admin/audit`` lists the audit
log, newest first; a key of some tenants sees only the entries of those tenants.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from producers.http.auth import authorize
from producers.http.errors import ApiError, error_responses
from producers.http.state import State
from producers.http.tenancy import submission_tenant
from producers.purge import PurgeRunning, TenantPurge, read_progress
from shared.api_keys import TENANT_PATTERN, KeyScope, Role
from shared.audit import AuditLog, key_actor
from shared.errors import OmnibindError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Tenant = Annotated[str, Path(pattern=TENANT_PATTERN, description="the tenant")]
Admin = Annotated[KeyScope, Depends(authorize(Role.ADMIN))]


def _run(job: TenantPurge) -> None:
    try:
        job.run()
    except PurgeRunning:
        log.info("purge of %s: already running elsewhere", job.tenant)
    except OmnibindError:  # Redis or a store down: the progress is kept, a new POST continues
        log.exception("purge of %s stopped", job.tenant)


@router.post(
    "/tenants/{tenant}/purge",
    status_code=202,
    summary="Purge a tenant",
    responses=error_responses(401, 403, 422, 500, 503),
)
async def purge_tenant(tenant: Tenant, state: State, caller: Admin, response: Response) -> dict[str, Any]:
    """Delete everything of `tenant`: status records, vectors, its objects, dead letters,
    decision-log entries, results and webhook deliveries. Answers 202 at once with the
    progress (``state``: running | done, ``phase``, ``counts``, ``total``); follow it with
    GET on the same path. Posting while it runs changes nothing; posting after it finished
    purges again whatever arrived since."""
    submission_tenant(caller, tenant)  # 403 unless the key covers the tenant
    job = TenantPurge(state.client, tenant, actor=key_actor(caller.key_id))
    threading.Thread(target=_run, args=(job,), name=f"purge-{tenant}", daemon=True).start()
    response.headers["Location"] = f"/v1/admin/tenants/{tenant}/purge"
    progress = await run_in_threadpool(read_progress, state.client, tenant)
    return progress.as_doc() if progress else {"tenant": tenant, "state": "starting"}


@router.get(
    "/tenants/{tenant}/purge",
    summary="Follow a tenant's purge",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
def purge_progress(tenant: Tenant, state: State, caller: Admin) -> dict[str, Any]:
    """Where the last purge of `tenant` stands (404 if it was never purged)."""
    submission_tenant(caller, tenant)
    progress = read_progress(state.client, tenant)
    if progress is None:
        raise ApiError(404, "purge_not_found", f"tenant {tenant} was never purged")
    return progress.as_doc()


@router.get("/audit", summary="Read the audit log", responses=error_responses(401, 403, 422, 500, 503))
def audit_log(
    state: State,
    caller: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    action: Annotated[str | None, Query(max_length=64, description="an action, or a family ending in '.'")] = None,
) -> list[dict[str, Any]]:
    """Admin actions, newest first: action, actor, target, tenant, detail, time."""
    audit = AuditLog.from_settings(state.client.redis, state.settings)
    if isinstance(caller.tenants, frozenset):
        entries = [
            entry for name in sorted(caller.tenants) for entry in audit.newest(limit=limit, action=action, tenant=name)
        ]
        entries = sorted(entries, key=lambda e: tuple(int(part) for part in e.entry_id.split("-")), reverse=True)
        entries = entries[:limit]
    else:  # every tenant
        entries = audit.newest(limit=limit, action=action)
    return [entry.model_dump(mode="json") for entry in entries]
