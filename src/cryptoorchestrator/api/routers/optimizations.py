"""``/api/optimizations``: your stored parameter studies, and submitting or cancelling them
through the cluster facade (503 "not available" without a cluster).

Viewers read; traders also submit and cancel.  ``GET /api/optimizations/{id}/trials`` lists a
study's finished trials (the dashboard's live view reads it while the study runs).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from sqlalchemy import select

from cryptoorchestrator.api.deps import ClusterDep, RunQuota, RunsDep, TraderUser
from cryptoorchestrator.api.routers.params import NOT_AVAILABLE, Limit, RunId
from cryptoorchestrator.api.schemas import OptimizationCreate, OptimizationRunPublic, RunSubmitted
from cryptoorchestrator.platform.storage.models import OptimizationTrial
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


@router.get("/{run_id}/trials")
def optimization_trials(
    run_id: RunId,
    runs: RunsDep,
    after: Annotated[
        int, Query(ge=0, le=2**62, description="only trials after this id (the last one seen)")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Finished trials of one of your studies, in the order they were recorded.

    Pass the last ``id`` seen as ``after`` to read only the new ones.
    """
    run = runs.optimization(run_id)  # 404 for anyone else's study
    rows = runs.session.scalars(
        select(OptimizationTrial)
        .where(OptimizationTrial.run_id == run.id, OptimizationTrial.id > after)
        .order_by(OptimizationTrial.id)
        .limit(limit)
    ).all()
    return {
        "runId": run.id,
        "status": run.status,
        "progress": run.progress,
        "nTrials": run.n_trials,
        "objective": run.objective,
        "space": run.space,
        "items": [trial_public(t) for t in rows],
    }


def trial_public(trial: OptimizationTrial) -> dict[str, Any]:
    """One finished trial as the API shows it (also pushed by ``/ws/runs``)."""
    return {
        "id": trial.id,
        "params": trial.params,
        "value": trial.value,
        "status": trial.status,
        "metrics": trial.metrics,
        "error": trial.error,
        "finishedAt": trial.finished_at.isoformat(),
    }
