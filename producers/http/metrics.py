"""``GET /metrics`` (Prometheus text format) and the API's own request metrics.

The registry of an app holds the pipeline collector (`shared.metrics.collector`: queue
lengths, stage latencies, batch sizes, failures, flags, all read from Redis), this
process's request counters and latencies, and the usual process metrics.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client import generate_latest as render_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.client import Client
from producers.http.auth import authorize
from producers.http.errors import error_responses
from producers.http.state import State
from shared.api_keys import Role
from shared.metrics.collector import PipelineCollector

UNMATCHED_ROUTE = "(unmatched)"


class HttpMetrics:
    """Requests served by this API process, by route template (never the raw path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "omnibind_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "omnibind_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route.",
            ["method", "route"],
            registry=registry,
        )


def build_registry(client: Client) -> tuple[CollectorRegistry, HttpMetrics]:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(client.redis, client.settings))
    ProcessCollector(registry=registry)
    return registry, HttpMetrics(registry)


class RequestMetrics:
    """ASGI middleware counting every answered request and timing it."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_s = time.perf_counter()
        status = {"code": 500}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - started_s)


def metrics_router(*, public: bool) -> APIRouter:
    """The ``/metrics`` route; behind the API key unless `public`."""
    router = APIRouter(tags=["operations"], dependencies=[] if public else [Depends(authorize(Role.ADMIN))])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
            **error_responses(401, 403),
        },
    )
    def metrics(state: State) -> Response:
        """The pipeline's metrics (read from Redis) and this process's request metrics."""
        return Response(render_metrics(state.registry), media_type=CONTENT_TYPE_LATEST)

    return router
