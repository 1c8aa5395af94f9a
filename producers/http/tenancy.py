"""Which tenant a request acts for, and the tenant namespace of upload ids and objects.

The tenant comes from the API key (`KeyScope`), never from the body alone: a body may name
one of the key's tenants (403 ``tenant_forbidden`` otherwise) and may omit it when the key
has exactly one.

Upload ids are namespaced per tenant: the API stores an upload of tenant ``acme`` under the
id ``acme:<id>`` (the id as given, unless it already starts with ``acme:``). Everything
downstream is keyed by that qualified id: the status record, the vector record's uuid, the
object key ``acme:<id>/<file name>``, dead letters, results. So one tenant's id can never
name another tenant's upload or object, and a key reading an id outside its tenants gets
the same 404 as for a missing one (the record's tenant is checked as well). An object an
event references must belong to the tenant exactly as the bridge decides it
(`shared.tenancy.ObjectTenants`): the uploads bucket under the tenant's prefix ``acme:``, or
a location ``OMNIBIND_BRIDGE__OBJECT_TENANTS`` gives the tenant. Operator keys (``*``) act
as before: ids are qualified only when a tenant is named, and an operator naming no tenant
may reference any object.
"""

from __future__ import annotations

from producers.http.errors import ApiError
from shared.api_keys import KeyScope, check_tenant
from shared.errors import ObjectNotFound, PermanentError
from shared.events import ObjectRef
from shared.status import StatusRecord
from shared.tenancy import SEPARATOR, ObjectTenants, qualify
from shared.vectors.records import TenantScope, tenants

__all__ = ["SEPARATOR", "check_object_ref", "id_to_read", "qualify", "search_scope", "submission_tenant", "visible"]


def submission_tenant(caller: KeyScope, named: str | None) -> str | None:
    """The tenant a submission or search acts for: `named` if the key covers it, else the
    key's only tenant; None for an operator naming none. Raises 403 ``tenant_forbidden``,
    422 ``tenant_required`` (a key of several tenants that names none) or 422
    ``invalid_tenant``."""
    if named is not None:
        try:
            check_tenant(named)
        except ValueError as exc:
            raise PermanentError(str(exc), reason="invalid_tenant") from exc
        if not caller.covers(named):
            raise ApiError(403, "tenant_forbidden", f"this API key may not act for tenant {named!r}")
        return named
    if caller.all_tenants:
        return None
    only = caller.single_tenant
    if only is None:
        raise PermanentError("this API key has several tenants: name one in 'tenant'", reason="tenant_required")
    return only


def search_scope(caller: KeyScope, named: str | None) -> TenantScope:
    """The tenants a search may see: the one named (if the key covers it), else all of the key's."""
    if named is not None:
        return tenants(submission_tenant(caller, named) or named)
    return caller.tenants


def id_to_read(caller: KeyScope, upload_id: str) -> str:
    """The qualified id a key means by `upload_id` (a key of one tenant may leave the tenant
    out; operators and keys of several tenants give the qualified id)."""
    only = caller.single_tenant
    return qualify(only, upload_id) if only is not None else upload_id


def visible(caller: KeyScope, record: StatusRecord | None) -> StatusRecord | None:
    """`record` if the key may see it, else None (answered like a missing record)."""
    if record is None or not caller.covers(record.tenant):
        return None
    return record


def check_object_ref(caller: KeyScope, tenant: str | None, ref: ObjectRef, owners: ObjectTenants) -> None:
    """Refuse a reference to an object the tenant does not own (`owners.owner`, the rule the
    bridge applies). An operator naming no tenant may reference any object; one naming a
    tenant, that tenant's objects and those of no tenant. Answered exactly like a missing
    object (`ObjectNotFound`), so the refusal tells nothing about other tenants' objects."""
    if caller.all_tenants and tenant is None:
        return
    owner = owners.owner(ref.bucket, ref.key)
    if owner != tenant and not (caller.all_tenants and owner is None):
        raise ObjectNotFound(f"object {ref.bucket}/{ref.key} does not exist")
