"""What the routes of one app share: settings, the producer client, keys, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from producers.client import Client
from producers.http.auth import ApiKeys
from shared.config import Settings
from shared.tenancy import ObjectTenants


@dataclass(frozen=True)
class ApiState:
    settings: Settings
    client: Client
    api_keys: ApiKeys
    registry: CollectorRegistry
    object_owners: ObjectTenants  # who owns the objects an upload may reference


def api_state(request: Request) -> ApiState:
    """FastAPI dependency: the state of the app serving `request`."""
    state: ApiState = request.app.state.omnibind
    return state


State = Annotated[ApiState, Depends(api_state)]
