"""A registry of health checks that other layers plug into.

``AppContext.health.register("name", check)`` adds a component to ``/api/health/detailed``;
``register(..., external=True)`` to ``/api/health/external-apis``.  A check is a function (sync or
async) returning a dict with at least ``status``: ``healthy``, ``degraded``, ``unavailable`` (not
configured or not built) or ``unhealthy``.  Any ``unhealthy`` component makes the route answer 503
with the reasons; a check that raises or times out counts as unhealthy.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

HealthCheck = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"


@dataclass
class HealthRegistry:
    """Named health checks, run concurrently with a timeout each."""

    timeout_s: float = 3.0
    components: dict[str, HealthCheck] = field(default_factory=dict)
    external: dict[str, HealthCheck] = field(default_factory=dict)

    def register(self, name: str, check: HealthCheck, *, external: bool = False) -> None:
        """Add or replace the check ``name``."""
        (self.external if external else self.components)[name] = check

    async def _run_one(self, check: HealthCheck) -> dict[str, Any]:
        try:
            if inspect.iscoroutinefunction(check):
                result = await asyncio.wait_for(check(), self.timeout_s)
            else:
                # Sync checks may block (database round trip); keep them off the event loop.
                result = await asyncio.wait_for(run_in_threadpool(check), self.timeout_s)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, self.timeout_s)
        except TimeoutError:
            return {"status": UNHEALTHY, "reason": f"check timed out after {self.timeout_s} s"}
        except Exception as exc:  # a broken check must report, not crash the health route
            return {"status": UNHEALTHY, "reason": f"{type(exc).__name__}: {exc}"}
        return dict(result)  # type: ignore[arg-type]

    async def run(self, *, external: bool = False) -> tuple[bool, dict[str, Any]]:
        """Run the checks; return ``(healthy, report)`` where report maps name -> result."""
        checks = self.external if external else self.components
        names = list(checks)
        results = await asyncio.gather(*(self._run_one(checks[n]) for n in names))
        report = dict(zip(names, results, strict=True))
        healthy = all(r.get("status") != UNHEALTHY for r in results)
        return healthy, report


def overall(healthy: bool, report: dict[str, Any]) -> dict[str, Any]:
    """Return the route's body: overall status, reasons of unhealthy parts, components."""
    reasons = [
        f"{name}: {r.get('reason') or r.get('error') or 'unhealthy'}"
        for name, r in report.items()
        if r.get("status") == UNHEALTHY
    ]
    degraded = any(r.get("status") != HEALTHY for r in report.values())
    status = UNHEALTHY if not healthy else ("degraded" if degraded else HEALTHY)
    return {"status": status, "reasons": reasons, "components": report}
