"""``/api/health``: liveness, component health, external APIs, database.  No auth.

Unhealthy parts make the route answer 503 with the reasons in the body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cryptoorchestrator.api.health import HealthRegistry, overall
from cryptoorchestrator.platform.storage.db import check_database

router = APIRouter(prefix="/api/health", tags=["health"])

_LIVE = {"status": "ok"}
UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"description": "a component is unhealthy; the body says which and why"}
}


@router.get("")
async def liveness() -> dict[str, str]:
    """Answer at once, touching nothing (process liveness)."""
    return _LIVE


def _answer(healthy: bool, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/detailed", responses=UNHEALTHY)
async def detailed(request: Request) -> JSONResponse:
    """Database, Ray, risk actor, each exchange's ``circuit_breaker``, bots by status."""
    registry: HealthRegistry = request.app.state.health
    healthy, report = await registry.run()
    body = overall(healthy, report)
    # The troubleshooting guide tells users to look for `circuit_breaker` at the top level.
    body["circuit_breaker"] = report.get("circuit_breaker", {"status": "unavailable"})
    return _answer(healthy, body)


@router.get("/external-apis", responses=UNHEALTHY)
async def external_apis(request: Request) -> JSONResponse:
    """Reachability of the exchanges the stored accounts use."""
    registry: HealthRegistry = request.app.state.health
    healthy, report = await registry.run(external=True)
    return _answer(healthy, overall(healthy, report))


@router.get("/database", responses=UNHEALTHY)
async def database(request: Request) -> JSONResponse:
    """Round-trip latency and connection-pool statistics."""
    result = await run_in_threadpool(check_database, request.app.state.settings)
    return _answer(result.get("status") == "healthy", result)
