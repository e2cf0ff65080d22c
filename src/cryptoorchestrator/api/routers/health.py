"""``/api/health``: liveness, component health, external APIs, database.  No auth needed.

Unhealthy parts make the route answer 503 with the reasons in the body.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from cryptoorchestrator.api.deps import (
    SCHEME_NAME,
    AdminUser,
    Bearer,
    ContextDep,
    SessionDep,
    current_user,
    has_role,
)
from cryptoorchestrator.api.health import overall
from cryptoorchestrator.platform.errors import UnauthorizedError
from cryptoorchestrator.platform.notify.dispatcher import notifications_health
from cryptoorchestrator.platform.services.bots import bots_by_status
from cryptoorchestrator.platform.storage.db import check_database
from cryptoorchestrator.platform.storage.integrity import integrity_health
from cryptoorchestrator.platform.storage.models import ExchangeAccount, User

router = APIRouter(prefix="/api/health", tags=["health"])

_LIVE = {"status": "ok"}
UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"description": "a component is unhealthy; the body says which and why"}
}
#: A bearer token is optional here (it widens what the answer shows): an empty requirement
#: tells OpenAPI clients that anonymous calls are allowed too.
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}, {SCHEME_NAME: []}]}


@router.get("")
async def liveness() -> dict[str, str]:
    """Answer at once, touching nothing (process liveness)."""
    return _LIVE


def _answer(healthy: bool, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=200 if healthy else 503)


async def caller(
    request: Request, context: ContextDep, db: SessionDep, creds: Bearer
) -> User | None:
    """Return the (optional) bearer token's active user; None for anonymous or bad tokens."""
    if creds is None:
        return None
    try:
        return await current_user(request, context, db, creds)
    except UnauthorizedError:
        return None


Caller = Annotated[User | None, Depends(caller)]


async def caller_is_admin(user: Caller) -> bool:
    """Return whether the (optional) bearer token is an active admin's; anonymous is no admin."""
    return user is not None and has_role(user, "admin")


AdminCaller = Annotated[bool, Depends(caller_is_admin)]


def _own_breakers(component: dict[str, Any], accounts: set[str]) -> dict[str, Any]:
    """The circuit breakers of ``accounts`` only (keys are ``<exchange>:<account id>``)."""
    exchanges = component.get("exchanges") or {}
    mine = {k: v for k, v in exchanges.items() if k.rpartition(":")[2] in accounts}
    open_ = [k for k, v in mine.items() if v.get("state") == "open"]
    return {"status": component.get("status"), "open": open_, "exchanges": mine}


def tenant_report(report: dict[str, Any], user: User | None, db: Session) -> dict[str, Any]:
    """Return the components as a non-admin may see them.

    Everyone sees each component's status; errors (hosts, addresses, exception text) and
    figures over every user's bots are the operator's.  A signed-in user also sees their own
    bots by status, their own accounts' circuit breakers, and whether the global kill switch
    or their own is engaged (not whose others are).
    """
    out: dict[str, Any] = {name: {"status": c.get("status")} for name, c in report.items()}
    if user is None:
        return out
    if "bots" in report:
        out["bots"]["by_status"] = bots_by_status(db, user_id=user.id)
    if "circuit_breaker" in report:
        accounts = {
            str(i)
            for i in db.scalars(
                select(ExchangeAccount.id).where(ExchangeAccount.user_id == user.id)
            )
        }
        out["circuit_breaker"] = _own_breakers(report["circuit_breaker"], accounts)
    switch = (report.get("risk_actor") or {}).get("kill_switch")
    if isinstance(switch, dict) and "global" in switch:
        out["risk_actor"]["kill_switch"] = _own_kill_switch(switch, user.id)
    return out


def _own_kill_switch(switch: dict[str, Any], user_id: int) -> dict[str, bool]:
    """The kill switches that stop ``user_id``'s bots: the global one and their own."""
    return {"global": bool(switch.get("global")), "user": user_id in switch.get("user_ids", [])}


@router.get("/detailed", responses=UNHEALTHY, openapi_extra=OPTIONAL_AUTH)
async def detailed(context: ContextDep, user: Caller, db: SessionDep) -> JSONResponse:
    """Database, Ray, risk actor (with its kill switches), each exchange's ``circuit_breaker``,
    bots by status, and (signed in) dead-lettered ``notifications``.

    Anonymous callers see each component's status; a signed-in user also their own bots,
    circuit breakers and the kill switches that stop their bots; an admin everything (errors,
    every bot, every breaker, the global switch and how many users' own are engaged).
    """
    healthy, report = await context.health.run()
    if user is None or not has_role(user, "admin"):
        report = await run_in_threadpool(tenant_report, report, user, db)
    body = overall(healthy, report)
    # The troubleshooting guide tells users to look for `circuit_breaker` at the top level.
    body["circuit_breaker"] = report.get("circuit_breaker", {"status": "unavailable"})
    if user is not None:  # dead letters: an admin's count is everyone's, a user's their own
        scope = None if has_role(user, "admin") else user.id
        body["notifications"] = await run_in_threadpool(notifications_health, db, scope)
    return _answer(healthy, body)


def public_exchanges(report: dict[str, Any]) -> dict[str, Any]:
    """Return the external report as anyone may see it: up or down per configured exchange."""
    out: dict[str, Any] = {}
    for name, component in report.items():
        exchanges = component.get("exchanges") or {}
        out[name] = {
            "status": component.get("status"),
            "reason": component.get("reason"),
            "exchanges": {
                str(n): {"reachable": bool(r.get("reachable"))} for n, r in exchanges.items()
            },
        }
    return out


@router.get("/external-apis", responses=UNHEALTHY, openapi_extra=OPTIONAL_AUTH)
async def external_apis(context: ContextDep, is_admin: AdminCaller) -> JSONResponse:
    """Reachability of the exchanges the operator configured (``exchange_endpoints``).

    Anyone sees up or down per exchange name; an admin's token also shows status codes and
    latencies.  Users' account URLs are never probed here.
    """
    healthy, report = await context.health.run(external=True)
    if not is_admin:
        report = public_exchanges(report)
    return _answer(healthy, overall(healthy, report))


@router.get("/database", responses=UNHEALTHY, openapi_extra=OPTIONAL_AUTH)
async def database(
    context: ContextDep, is_admin: Annotated[bool, Depends(caller_is_admin)]
) -> JSONResponse:
    """Round-trip latency and connection-pool statistics (the error text for admins only)."""
    result = await run_in_threadpool(check_database, context.settings)
    if not is_admin and "error" in result:
        result = {**result, "error": "the database did not answer (details for admins)"}
    return _answer(result.get("status") == "healthy", result)


@router.get("/integrity")
async def integrity(context: ContextDep, _admin: AdminUser, run: bool = False) -> dict[str, Any]:
    """The books' integrity (admins): open findings of ``cryptoorch db check``, by kind.

    As of the last check by default (one query, fit for a monitor); ``?run=true`` runs the
    whole check first (it reads every order, fill and position; findings are recorded in the
    quarantine table, never fixed).  ``status`` is ``ok`` or ``findings``.
    """
    return await run_in_threadpool(integrity_health, context.settings, run=run)
