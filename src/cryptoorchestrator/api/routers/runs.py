"""``/api/backtests``, ``/api/optimizations``, ``/api/risk``: stored records from the database,
and the actions (submit, cancel, edit limits, kill switch) through the cluster facade.

Reading runs and limits works now; actions answer 503 "not available" until the cluster layer
(issue 8, and the optimizer of issue 6) provides them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from sqlalchemy import select

from cryptoorchestrator.api.deps import ClusterDep, CurrentUser, SessionDep
from cryptoorchestrator.api.schemas import (
    BacktestCreate,
    BacktestRunPublic,
    KillSwitchIn,
    OptimizationCreate,
    OptimizationRunPublic,
    RiskLimitPublic,
    RiskLimitsUpdate,
    RunSubmitted,
)
from cryptoorchestrator.platform.errors import ConflictError, NotFoundError
from cryptoorchestrator.platform.storage.models import (
    BacktestRun,
    Bot,
    OptimizationRun,
    RiskEvent,
    RiskLimit,
)

router = APIRouter(prefix="/api", tags=["runs", "risk"])
NOT_AVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the cluster layer is not available"}
}
Limit = Annotated[int, Query(ge=1, le=500)]


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


@router.post("/backtests", status_code=status.HTTP_202_ACCEPTED, responses=NOT_AVAILABLE)
async def submit_backtest(
    body: BacktestCreate, user: CurrentUser, cluster: ClusterDep
) -> RunSubmitted:
    """Submit a backtest to the cluster; returns its id at once."""
    run_id = await cluster.submit_backtest(user.id, body.model_dump(mode="json"))
    return RunSubmitted(id=run_id, status="queued")


@router.get("/backtests/{run_id}")
def get_backtest(run_id: str, db: SessionDep, user: CurrentUser) -> BacktestRunPublic:
    """Status, progress and metrics of one of your backtests."""
    return BacktestRunPublic.model_validate(_backtest(db, user.id, run_id))


@router.get("/backtests/{run_id}/results")
def backtest_results(run_id: str, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Metrics of a finished backtest (409 while it is not finished)."""
    run = _backtest(db, user.id, run_id)
    if run.status != "succeeded":
        raise ConflictError(f"backtest {run_id} is {run.status}, not succeeded")
    return {"id": run.id, "metrics": run.metrics or {}, "outputDir": run.output_dir}


@router.post("/backtests/{run_id}/cancel", responses=NOT_AVAILABLE)
async def cancel_backtest(
    run_id: str, db: SessionDep, user: CurrentUser, cluster: ClusterDep
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
    body: OptimizationCreate, user: CurrentUser, cluster: ClusterDep
) -> RunSubmitted:
    """Submit a parameter study to the cluster; returns its id at once."""
    run_id = await cluster.submit_optimization(user.id, body.model_dump(mode="json"))
    return RunSubmitted(id=run_id, status="queued")


@router.get("/optimizations/{run_id}")
def get_optimization(run_id: str, db: SessionDep, user: CurrentUser) -> OptimizationRunPublic:
    """Status, progress and best result of one of your optimizations."""
    return OptimizationRunPublic.model_validate(_optimization(db, user.id, run_id))


@router.post("/optimizations/{run_id}/cancel", responses=NOT_AVAILABLE)
async def cancel_optimization(
    run_id: str, db: SessionDep, user: CurrentUser, cluster: ClusterDep
) -> RunSubmitted:
    """Cancel one of your running optimizations."""
    run = _optimization(db, user.id, run_id)
    await cluster.cancel_run("optimization", run.id)
    return RunSubmitted(id=run.id, status="cancelling")


def _limits(db: SessionDep, user_id: int) -> list[RiskLimitPublic]:
    bot_scopes = [f"bot:{i}" for i in db.scalars(select(Bot.id).where(Bot.user_id == user_id))]
    rows = db.scalars(
        select(RiskLimit)
        .where(RiskLimit.scope.in_(["portfolio", *bot_scopes]))
        .order_by(RiskLimit.scope, RiskLimit.name)
    )
    return [RiskLimitPublic.model_validate(r) for r in rows]


@router.get("/risk/limits")
def get_risk_limits(db: SessionDep, user: CurrentUser) -> list[RiskLimitPublic]:
    """Persisted risk limits of the portfolio and of your bots."""
    return _limits(db, user.id)


@router.put("/risk/limits", responses=NOT_AVAILABLE)
async def put_risk_limits(
    body: RiskLimitsUpdate, user: CurrentUser, cluster: ClusterDep
) -> dict[str, Any]:
    """Change limits at run time (applied and persisted by the risk actor)."""
    return await cluster.set_risk_limits(user.id, {"limits": body.limits})


@router.post("/risk/kill-switch", responses=NOT_AVAILABLE)
async def kill_switch(body: KillSwitchIn, user: CurrentUser, cluster: ClusterDep) -> dict[str, Any]:
    """Emergency stop-all: cancel open orders and stop every bot (optionally flatten)."""
    return await cluster.kill_switch(user.id, body.flatten)


@router.get("/analytics/risk", responses=NOT_AVAILABLE)
async def analytics_risk(user: CurrentUser, cluster: ClusterDep) -> dict[str, Any]:
    """Limits, live utilisation and recent breaches (utilisation comes from the risk actor)."""
    return await cluster.risk_utilisation(user.id)


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
