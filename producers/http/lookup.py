"""Finding the upload a request names, within the caller's tenants."""

from __future__ import annotations

from producers.http.errors import ApiError
from producers.http.state import ApiState
from producers.http.tenancy import id_to_read, visible
from shared.api_keys import KeyScope
from shared.audit import key_actor
from shared.status import StatusRecord


def find_upload(state: ApiState, caller: KeyScope, upload_id: str) -> StatusRecord:
    """The status record `upload_id` names for `caller`. Raises 404 ``upload_not_found`` for
    an unknown id and, exactly alike, for another tenant's (no existence leak)."""
    record = visible(caller, state.client.status(id_to_read(caller, upload_id)))
    if record is None:
        raise ApiError(404, "upload_not_found", f"no upload {upload_id} (unknown, or its record expired)")
    return record


def reviewer_of(caller: KeyScope) -> str:
    """Who a decision is recorded as made by, as the audit log names actors:
    ``key:<managed key id>``, or ``key:static`` for an operator key."""
    return key_actor(caller.key_id)
