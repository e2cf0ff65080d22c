"""``/api/backtests``, ``/api/optimizations``, ``/api/risk``: stored records from the database,
and the actions (submit, cancel, edit limits, kill switch) through the cluster facade.

Reading runs and limits works now; actions answer 503 "not available" until the cluster layer
(issue 8, and the optimizer of issue 6) provides them.

Roles: viewers read; traders also submit and cancel runs, set their own risk limits and pull
their own kill switch (their bots only); only admins touch the portfolio's limits and the
global kill switch, and only they see totals over every user's bots.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from sqlalchemy import select

from cryptoorchestrator.api.deps import (
    ClusterDep,
    CurrentUser,
    SessionDep,
    TraderUser,
    has_role,
    registry_validator,
)
from cryptoorchestrator.api.schemas import (
    BacktestCreate,
    BacktestRunPublic,
    KillSwitchIn,
    OptimizationCreate,
    OptimizationRunPublic,
    RiskLimitPublic,
    RiskLimitsUpdate,
    RunSubmitted,
    Text,
)
from cryptoorchestrator.platform.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from cryptoorchestrator.platform.risk.limits import user_scope
from cryptoorchestrator.platform.services.runs import check_run_quota
from cryptoorchestrator.platform.storage.models import (
    BacktestRun,
    Bot,
    OptimizationRun,
    RiskEvent,
    RiskLimit,
)
from cryptoorchestrator.strategies.registry import registered_strategy

router = APIRouter(prefix="/api", tags=["runs", "risk"])
NOT_AVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the cluster layer is not available"}
}
Limit = Annotated[int, Query(ge=1, le=500)]
#: Run ids are UUIDs (36 characters); the check keeps NUL characters away from PostgreSQL.
RunId = Annotated[Text, Path(max_length=36)]


def _backtest(db: SessionDep, user_id: int, run_id: str) -> BacktestRun:
    run = db.scalar(
        select(BacktestRun).where(BacktestRun.id == run_id, BacktestRun.user_id == user_id)
    )
    if run is None:
        raise NotFoundError(f"backtest {run_id} not found")
    return run


def _optimization(db: SessionDep, user_id: int, run_id: str) -> OptimizationRun:
    run = db.scalar(
        select(OptimizationRun).where(
            OptimizationRun.id == run_id, OptimizationRun.user_id == user_id
        )
    )
    if run is None:
        raise NotFoundError(f"optimization {run_id} not found")
    return run


@router.get("/backtests")
def list_backtests(db: SessionDep, user: CurrentUser, limit: Limit = 50) -> list[BacktestRunPublic]:
    """List your backtest runs, newest first."""
    rows = db.scalars(
        select(BacktestRun)
        .where(BacktestRun.user_id == user.id)
        .order_by(BacktestRun.created_at.desc())
        .limit(limit)
    )
    return [BacktestRunPublic.model_validate(r) for r in rows]


def run_quota(request: Request, db: SessionDep, user: TraderUser) -> None:
    """Refuse a new run (409) while the user has ``max_active_runs`` queued or running."""
    check_run_quota(db, user.id, request.app.state.options.max_active_runs)


RunQuota = Annotated[None, Depends(run_quota)]


@router.post("/backtests", status_code=status.HTTP_202_ACCEPTED, responses=NOT_AVAILABLE)
async def submit_backtest(
    body: BacktestCreate, user: TraderUser, cluster: ClusterDep, _quota: RunQuota
) -> RunSubmitted:
    """Submit a backtest to the cluster; returns its id at once."""
    # Only registered strategy names reach the cluster (422 otherwise, nothing imported).
    registry_validator()(body.strategy, body.params)
    run_id = await cluster.submit_backtest(user.id, body.model_dump(mode="json"))
    return RunSubmitted(id=run_id, status="queued")


@router.get("/backtests/{run_id}")
def get_backtest(run_id: RunId, db: SessionDep, user: CurrentUser) -> BacktestRunPublic:
    """Status, progress and metrics of one of your backtests."""
    return BacktestRunPublic.model_validate(_backtest(db, user.id, run_id))


@router.get("/backtests/{run_id}/results")
def backtest_results(run_id: RunId, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Metrics of a finished backtest (409 while it is not finished)."""
    run = _backtest(db, user.id, run_id)
    if run.status != "succeeded":
        raise ConflictError(f"backtest {run_id} is {run.status}, not succeeded")
    return {"id": run.id, "metrics": run.metrics or {}, "outputDir": run.output_dir}


@router.post("/backtests/{run_id}/cancel", responses=NOT_AVAILABLE)
async def cancel_backtest(
    run_id: RunId, db: SessionDep, user: TraderUser, cluster: ClusterDep
) -> RunSubmitted:
    """Cancel one of your running backtests."""
    run = _backtest(db, user.id, run_id)
    await cluster.cancel_run("backtest", run.id)
    return RunSubmitted(id=run.id, status="cancelling")


@router.get("/optimizations")
def list_optimizations(
    db: SessionDep, user: CurrentUser, limit: Limit = 50
) -> list[OptimizationRunPublic]:
    """List your optimization runs, newest first."""
    rows = db.scalars(
        select(OptimizationRun)
        .where(OptimizationRun.user_id == user.id)
        .order_by(OptimizationRun.created_at.desc())
        .limit(limit)
    )
    return [OptimizationRunPublic.model_validate(r) for r in rows]


@router.post("/optimizations", status_code=status.HTTP_202_ACCEPTED, responses=NOT_AVAILABLE)
async def submit_optimization(
    body: OptimizationCreate, user: TraderUser, cluster: ClusterDep, _quota: RunQuota
) -> RunSubmitted:
    """Submit a parameter study to the cluster; returns its id at once."""
    registered_strategy(body.strategy)  # only registered names reach the cluster
    run_id = await cluster.submit_optimization(user.id, body.model_dump(mode="json"))
    return RunSubmitted(id=run_id, status="queued")


@router.get("/optimizations/{run_id}")
def get_optimization(run_id: RunId, db: SessionDep, user: CurrentUser) -> OptimizationRunPublic:
    """Status, progress and best result of one of your optimizations."""
    return OptimizationRunPublic.model_validate(_optimization(db, user.id, run_id))


@router.post("/optimizations/{run_id}/cancel", responses=NOT_AVAILABLE)
async def cancel_optimization(
    run_id: RunId, db: SessionDep, user: TraderUser, cluster: ClusterDep
) -> RunSubmitted:
    """Cancel one of your running optimizations."""
    run = _optimization(db, user.id, run_id)
    await cluster.cancel_run("optimization", run.id)
    return RunSubmitted(id=run.id, status="cancelling")


def _limits(db: SessionDep, user_id: int) -> list[RiskLimitPublic]:
    """The limits that apply to ``user_id``'s bots: the portfolio's, their own, their bots'."""
    bot_scopes = [f"bot:{i}" for i in db.scalars(select(Bot.id).where(Bot.user_id == user_id))]
    rows = db.scalars(
        select(RiskLimit)
        .where(RiskLimit.scope.in_(["portfolio", user_scope(user_id), *bot_scopes]))
        .order_by(RiskLimit.scope, RiskLimit.name)
    )
    return [RiskLimitPublic.model_validate(r) for r in rows]


@router.get("/risk/limits")
def get_risk_limits(db: SessionDep, user: CurrentUser) -> list[RiskLimitPublic]:
    """Persisted risk limits that apply to you: the portfolio's, your own and your bots'."""
    return _limits(db, user.id)


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


@router.put("/risk/limits", responses=NOT_AVAILABLE)
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


@router.post("/risk/kill-switch", responses=NOT_AVAILABLE)
async def kill_switch(body: KillSwitchIn, user: TraderUser, cluster: ClusterDep) -> dict[str, Any]:
    """Emergency stop: cancel open orders and stop your bots (optionally flatten).

    ``scope: "global"`` (admins only) stops every user's bots and denies every order.
    """
    _check_scope(user, body.scope)
    return await cluster.kill_switch(user.id, body.flatten, body.scope)


@router.delete("/risk/kill-switch", responses=NOT_AVAILABLE)
async def release_kill_switch(
    user: TraderUser,
    cluster: ClusterDep,
    scope: Annotated[Literal["user", "global"], Query()] = "user",
) -> dict[str, Any]:
    """Release your kill switch (or, admins only, the global one); then start your bots again."""
    _check_scope(user, scope)
    return await cluster.release_kill_switch(user.id, scope)


@router.get("/analytics/risk", responses=NOT_AVAILABLE)
async def analytics_risk(user: CurrentUser, cluster: ClusterDep) -> dict[str, Any]:
    """Limits, live utilisation of your bots and their recent breaches.

    Admins also get the whole portfolio's totals under ``portfolio``.
    """
    return await cluster.risk_utilisation(user.id, portfolio=has_role(user, "admin"))


@router.get("/risk/events")
def risk_events(db: SessionDep, user: CurrentUser, limit: Limit = 50) -> list[dict[str, Any]]:
    """Recent denials, breaches and kill switches affecting your bots."""
    bot_ids = select(Bot.id).where(Bot.user_id == user.id).scalar_subquery()
    rows = db.scalars(
        select(RiskEvent)
        .where(RiskEvent.bot_id.in_(bot_ids))
        .order_by(RiskEvent.created_at.desc(), RiskEvent.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": r.id,
            "botId": r.bot_id,
            "kind": r.kind,
            "limitName": r.limit_name,
            "message": r.message,
            "createdAt": r.created_at.isoformat(),
        }
        for r in rows
    ]
