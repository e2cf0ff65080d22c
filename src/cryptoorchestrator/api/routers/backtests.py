"""``/api/backtests``: your stored backtest runs, and submitting or cancelling them through the
cluster facade (503 "not available" without a cluster).

Viewers read; traders also submit and cancel.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from cryptoorchestrator.api.deps import (
    ClusterDep,
    RunQuota,
    RunsDep,
    TraderUser,
    registry_validator,
)
from cryptoorchestrator.api.routers.params import NOT_AVAILABLE, Limit, RunId
from cryptoorchestrator.api.schemas import BacktestCreate, BacktestRunPublic, RunSubmitted
from cryptoorchestrator.platform.errors import ConflictError

router = APIRouter(prefix="/api/backtests", tags=["runs"])


@router.get("")
def list_backtests(runs: RunsDep, limit: Limit = 50) -> list[BacktestRunPublic]:
    """List your backtest runs, newest first."""
    return [BacktestRunPublic.model_validate(r) for r in runs.backtests(limit)]


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=NOT_AVAILABLE)
async def submit_backtest(
    body: BacktestCreate, user: TraderUser, cluster: ClusterDep, _quota: RunQuota
) -> RunSubmitted:
    """Submit a backtest to the cluster; returns its id at once."""
    # Only registered strategy names reach the cluster (422 otherwise, nothing imported).
    registry_validator()(body.strategy, body.params)
    run_id = await cluster.submit_backtest(user.id, body.model_dump(mode="json"))
    return RunSubmitted(id=run_id, status="queued")


@router.get("/{run_id}")
def get_backtest(run_id: RunId, runs: RunsDep) -> BacktestRunPublic:
    """Status, progress and metrics of one of your backtests."""
    return BacktestRunPublic.model_validate(runs.backtest(run_id))


@router.get("/{run_id}/results")
def backtest_results(run_id: RunId, runs: RunsDep) -> dict[str, Any]:
    """Metrics of a finished backtest (409 while it is not finished)."""
    run = runs.backtest(run_id)
    if run.status != "succeeded":
        raise ConflictError(f"backtest {run_id} is {run.status}, not succeeded")
    return {"id": run.id, "metrics": run.metrics or {}, "outputDir": run.output_dir}


@router.post("/{run_id}/cancel", responses=NOT_AVAILABLE)
async def cancel_backtest(
    run_id: RunId, runs: RunsDep, _trader: TraderUser, cluster: ClusterDep
) -> RunSubmitted:
    """Cancel one of your running backtests."""
    run = runs.backtest(run_id)
    await cluster.cancel_run("backtest", run.id)
    return RunSubmitted(id=run.id, status="cancelling")
