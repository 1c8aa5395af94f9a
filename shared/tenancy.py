"""Tenant namespaces of upload ids and objects, and which tenant owns an object (pure).

An upload of tenant ``acme`` has the id ``acme:<id>`` everywhere downstream (status record,
vector record uuid, dead letters, results), whichever way it came in: the HTTP API
qualifies the id with the key's tenant, the ingest bridge with its source's configured
tenant. So a tenant's id can never name another tenant's upload, and everything of one
tenant is found by the id prefix ``acme:`` (purge).

Objects: an object belongs to the tenant its location says, never to one an event names.
The HTTP API stores a tenant's files in the uploads bucket under ``<tenant>:``; the bridge
setting ``OMNIBIND_BRIDGE__OBJECT_TENANTS`` maps further locations (a bucket, or a bucket
and key prefix) to tenants (`ObjectTenants`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.errors import ConfigError

if TYPE_CHECKING:  # shared.config imports this module (valid_tenant)
    from shared.config import Settings

SEPARATOR = ":"
# Same rule as `shared.api_keys.TENANT_PATTERN` (kept here so config-level code can check
# names without importing the key store).
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def valid_tenant(name: str) -> bool:
    return bool(_TENANT_RE.match(name))


def namespace(tenant: str) -> str:
    """The id (and uploads-bucket key) prefix of `tenant`: ``<tenant>:``."""
    return f"{tenant}{SEPARATOR}"


def qualify(tenant: str | None, upload_id: str) -> str:
    """`upload_id` in `tenant`'s namespace: ``<tenant>:<upload_id>`` (unchanged without a
    tenant, or when it already starts with ``<tenant>:``)."""
    if tenant is None or upload_id.startswith(namespace(tenant)):
        return upload_id
    return f"{namespace(tenant)}{upload_id}"


def tenant_of_id(upload_id: str) -> str | None:
    """The tenant whose namespace `upload_id` is in (its part before the first ``:``, when
    that is a valid tenant name), else None."""
    head, found, _ = upload_id.partition(SEPARATOR)
    return head if found and valid_tenant(head) else None


@dataclass(frozen=True, slots=True)
class Location:
    bucket: str
    prefix: str
    tenant: str

    def holds(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class ObjectTenants:
    """Which tenant owns an object, by where it is (see the module docstring)."""

    uploads_bucket: str
    locations: tuple[Location, ...] = ()  # longest prefix first

    @classmethod
    def parse(cls, uploads_bucket: str, mapping: Mapping[str, str]) -> ObjectTenants:
        """From ``{"bucket" | "bucket/prefix": tenant}``. Raises `ValueError` for an invalid
        tenant name, an empty bucket, or a location inside the uploads bucket's tenant
        namespaces (those belong to the tenant they name)."""
        found: list[Location] = []
        for where, tenant in mapping.items():
            bucket, _, prefix = where.partition("/")
            if not bucket:
                raise ValueError(f"object location {where!r} names no bucket")
            if not valid_tenant(tenant):
                raise ValueError(f"object location {where!r}: invalid tenant {tenant!r}")
            if bucket == uploads_bucket and (not prefix or SEPARATOR in prefix):
                raise ValueError(
                    f"object location {where!r} would hand tenants' ':' namespaces in bucket {bucket!r} "
                    "to one tenant: map a prefix without ':'"
                )
            found.append(Location(bucket, prefix, tenant))
        found.sort(key=lambda loc: (loc.bucket, -len(loc.prefix)))
        return cls(uploads_bucket, tuple(found))

    def owner(self, bucket: str, key: str) -> str | None:
        """The tenant owning `bucket`/`key`: the tenant named by its ``<tenant>:`` key prefix
        in the uploads bucket, else the longest configured location holding it; None when
        no tenant owns it."""
        if bucket == self.uploads_bucket:
            tenant = tenant_of_id(key)
            if tenant is not None:
                return tenant
        for location in self.locations:
            if location.holds(bucket, key):
                return location.tenant
        return None


def object_tenants(settings: Settings) -> ObjectTenants:
    """Who owns which objects, from settings: the uploads bucket's ``<tenant>:`` namespaces
    and ``OMNIBIND_BRIDGE__OBJECT_TENANTS``. The bridge and the HTTP API decide alike.
    Raises `ConfigError`."""
    try:
        return ObjectTenants.parse(settings.objects.bucket, settings.bridge.object_tenants)
    except ValueError as exc:
        raise ConfigError(f"invalid OMNIBIND_BRIDGE__OBJECT_TENANTS: {exc}") from exc
