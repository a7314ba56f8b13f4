"""The HTTP endpoint of a service: Prometheus metrics and health.

::

    GET /metrics    Prometheus text format: FastStream's metrics and Ballast's
    GET /health     200 when the broker is connected, the database answers and
                    the relay is alive; 503 with the failing checks otherwise

Served by `ServiceHost` when ``BALLAST_HTTP_PORT`` is set; point a Prometheus
scrape job and the orchestrator's liveness probe at it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HealthCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns each check's finding: ``"ok"`` or what is wrong."""


def service_app(registry: CollectorRegistry, health: HealthCheck) -> Starlette:
    """The ASGI app of one service host."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthy(request: Request) -> JSONResponse:
        checks = await health()
        ok = all(finding == "ok" for finding in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unhealthy", "checks": checks},
            status_code=200 if ok else 503,
        )

    return Starlette(routes=[Route("/metrics", metrics), Route("/health", healthy)])
