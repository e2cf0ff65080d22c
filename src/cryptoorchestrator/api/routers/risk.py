"""``/api/risk``: the risk limits and events that apply to your bots, and the actions (edit
limits, kill switch) through the cluster facade (503 "not available" without a cluster).

Roles: viewers read; traders also set their own risk limits and pull their own kill switch (their
bots only); only admins touch the portfolio's limits and the global kill switch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from cryptoorchestrator.api.deps import ClusterDep, RiskRecordsDep, TraderUser, has_role
from cryptoorchestrator.api.routers.params import NOT_AVAILABLE, Limit
from cryptoorchestrator.api.schemas import KillSwitchIn, RiskLimitPublic, RiskLimitsUpdate
from cryptoorchestrator.platform.errors import ForbiddenError, InvalidInputError

router = APIRouter(prefix="/api/risk", tags=["risk"])


@router.get("/limits")
def get_risk_limits(records: RiskRecordsDep) -> list[RiskLimitPublic]:
    """Persisted risk limits that apply to you: the portfolio's, your own and your bots'."""
    return [RiskLimitPublic.model_validate(r) for r in records.limits()]


_SCOPES = ["portfolio", "user"]


def _scoped(items: list[dict[str, Any]], admin: bool) -> list[dict[str, Any]]:
    """Give each item its scope (default: ``portfolio`` for admins, ``user`` for others) and
    refuse ``portfolio`` to anyone but an admin, before anything is applied.
    """
    scoped: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        scope = item.get("scope", "portfolio" if admin else "user")
        if scope == "portfolio" and not admin:
            raise ForbiddenError(
                f"limits[{i}]: portfolio limits need the 'admin' role; "
                "set your own with scope 'user'"
            )
        if scope not in _SCOPES:
            raise InvalidInputError(
                f"limits[{i}].scope",
                "per-bot limits are the bot's riskPerTrade and maxPositionSize: edit the bot",
                allowed=_SCOPES,
            )
        scoped.append({**item, "scope": scope})
    return scoped


@router.put("/limits", responses=NOT_AVAILABLE)
async def put_risk_limits(
    body: RiskLimitsUpdate, user: TraderUser, cluster: ClusterDep
) -> dict[str, Any]:
    """Change limits at run time (applied and persisted by the risk actor).

    Scope ``user`` (the default for traders): your own limits, which tighten the portfolio's
    for your bots only.  Scope ``portfolio`` (the default for admins): every bot's; admins only.
    """
    items = _scoped(body.limits, has_role(user, "admin"))
    return await cluster.set_risk_limits(user.id, {"limits": items})


def _check_scope(user: TraderUser, scope: str) -> None:
    """Refuse the global kill switch to anyone but an admin."""
    if scope == "global" and not has_role(user, "admin"):
        raise ForbiddenError(
            "the global kill switch needs the 'admin' role; use scope 'user' for your own bots"
        )


@router.post("/kill-switch", responses=NOT_AVAILABLE)
async def kill_switch(body: KillSwitchIn, user: TraderUser, cluster: ClusterDep) -> dict[str, Any]:
    """Emergency stop: cancel open orders and stop your bots (optionally flatten).

    ``scope: "global"`` (admins only) stops every user's bots and denies every order.
    """
    _check_scope(user, body.scope)
    return await cluster.kill_switch(user.id, body.flatten, body.scope)


@router.delete("/kill-switch", responses=NOT_AVAILABLE)
async def release_kill_switch(
    user: TraderUser,
    cluster: ClusterDep,
    scope: Annotated[Literal["user", "global"], Query()] = "user",
) -> dict[str, Any]:
    """Release your kill switch (or, admins only, the global one); then start your bots again.

    While a switch is engaged, starting a bot it covers answers 409.
    """
    _check_scope(user, scope)
    return await cluster.release_kill_switch(user.id, scope)


@router.get("/events")
def risk_events(records: RiskRecordsDep, limit: Limit = 50) -> list[dict[str, Any]]:
    """Recent denials, breaches and kill switches affecting your bots."""
    return [
        {
            "id": r.id,
            "botId": r.bot_id,
            "kind": r.kind,
            "limitName": r.limit_name,
            "message": r.message,
            "createdAt": r.created_at.isoformat(),
        }
        for r in records.events(limit)
    ]
