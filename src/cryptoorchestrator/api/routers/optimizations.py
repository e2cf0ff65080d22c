"""``/api/optimizations``: your stored parameter studies, and submitting or cancelling them
through the cluster facade (503 "not available" without a cluster).

Viewers read; traders also submit and cancel.
"""

from __future__ import annotations

from fastapi import APIRouter, status

from cryptoorchestrator.api.deps import ClusterDep, RunQuota, RunsDep, TraderUser
from cryptoorchestrator.api.routers.params import NOT_AVAILABLE, Limit, RunId
from cryptoorchestrator.api.schemas import OptimizationCreate, OptimizationRunPublic, RunSubmitted
from cryptoorchestrator.strategies.registry import registered_strategy

router = APIRouter(prefix="/api/optimizations", tags=["runs"])


@router.get("")
def list_optimizations(runs: RunsDep, limit: Limit = 50) -> list[OptimizationRunPublic]:
    """List your optimization runs, newest first."""
    return [OptimizationRunPublic.model_validate(r) for r in runs.optimizations(limit)]


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=NOT_AVAILABLE)
async def submit_optimization(
    body: OptimizationCreate, user: TraderUser, cluster: ClusterDep, _quota: RunQuota
) -> RunSubmitted:
    """Submit a parameter study to the cluster; returns its id at once."""
    registered_strategy(body.strategy)  # only registered names reach the cluster
    run_id = await cluster.submit_optimization(user.id, body.model_dump(mode="json"))
    return RunSubmitted(id=run_id, status="queued")


@router.get("/{run_id}")
def get_optimization(run_id: RunId, runs: RunsDep) -> OptimizationRunPublic:
    """Status, progress and best result of one of your optimizations."""
    return OptimizationRunPublic.model_validate(runs.optimization(run_id))


@router.post("/{run_id}/cancel", responses=NOT_AVAILABLE)
async def cancel_optimization(
    run_id: RunId, runs: RunsDep, _trader: TraderUser, cluster: ClusterDep
) -> RunSubmitted:
    """Cancel one of your running optimizations."""
    run = runs.optimization(run_id)
    await cluster.cancel_run("optimization", run.id)
    return RunSubmitted(id=run.id, status="cancelling")
