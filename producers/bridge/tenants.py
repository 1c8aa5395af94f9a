"""Which tenant a bridged upload acts for: its source's, from configuration (pure).

The bridge's sources bypass the API keys, so the tenant of what they bring comes from how
the source is configured, never from the event:

* the ingest stream ``{prefix}:ingest`` has the tenant ``OMNIBIND_BRIDGE__STREAM_TENANT``
  (unset: none), each tenant in ``OMNIBIND_BRIDGE__TENANT_STREAMS`` has its own stream
  ``{prefix}:ingest:<tenant>``;
* a MinIO notification's object has the tenant of its location
  (``OMNIBIND_BRIDGE__OBJECT_TENANTS``, `shared.tenancy.ObjectTenants`).

An event that names another tenant (its ``tenant`` field, or the ``omnibind-tenant`` object
metadata) is refused, not overridden: it is dead-lettered with reason ``tenant_mismatch``
so that a misrouted producer is noticed instead of silently filing uploads under a tenant
it did not mean. The same goes for an event naming an object its source's tenant does not
own, and, on a source without a tenant, for an id inside a tenant namespace (``acme:...``).
Accepted events get the id ``<tenant>:<id>`` (`shared.tenancy.qualify`), so one tenant's
source can never name, replace or re-index another tenant's upload.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import PermanentError
from shared.events import UploadEvent, parse_upload_event
from shared.tenancy import ObjectTenants, qualify, tenant_of_id


class TenantMismatch(PermanentError):
    """An event claims a tenant, object or id its source may not act for."""

    reason = "tenant_mismatch"


def _named(tenant: str | None) -> str:
    return f"tenant {tenant!r}" if tenant is not None else "no tenant"


@dataclass(frozen=True, slots=True)
class SourceTenancy:
    """The tenant of one source (`where`: how messages name the source) and who owns objects."""

    tenant: str | None
    objects: ObjectTenants
    where: str

    def upload_id(self, upload_id: str) -> str:
        return qualify(self.tenant, upload_id)

    def check_claim(self, claimed: str | None) -> None:
        """Raise `TenantMismatch` when an event names a tenant other than the source's."""
        if claimed is not None and claimed != self.tenant:
            raise TenantMismatch(f"the event names tenant {claimed!r}, but {self.where} has {_named(self.tenant)}")

    def check_object(self, bucket: str, key: str) -> None:
        """Raise `TenantMismatch` unless the object belongs to the source's tenant (or, for a
        source without one, to no tenant). The owner is not named: a refusal must tell a
        tenant nothing about another's objects."""
        if self.objects.owner(bucket, key) != self.tenant:
            raise TenantMismatch(
                f"object {bucket}/{key} is not an object of {_named(self.tenant)} "
                f"(the source is {self.where}; see OMNIBIND_BRIDGE__OBJECT_TENANTS)"
            )

    def apply(self, event: UploadEvent) -> UploadEvent:
        """`event` acting for the source's tenant, its id qualified by it.

        Raises `TenantMismatch` (see the module docstring), `InvalidEvent` when the
        qualified id is too long.
        """
        self.check_claim(event.tenant)
        if self.tenant is None and tenant_of_id(event.id) is not None:
            raise TenantMismatch(
                f"id {event.id!r} is inside a tenant namespace ('<tenant>:'), but {self.where} has no tenant"
            )
        if event.object is not None:
            self.check_object(event.object.bucket, event.object.key)
        upload_id = self.upload_id(event.id)
        if upload_id == event.id and event.tenant == self.tenant:
            return event
        return parse_upload_event({**event.model_dump(mode="json"), "id": upload_id, "tenant": self.tenant})
