"""Persisting studies: one ``OptimizationRun`` per study key, one ``OptimizationTrial`` per trial.

Trials are written as they finish, so a crash or a cancel loses at most the batches in flight;
opening the same study key again returns the finished trials, which the optimizer skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from cryptoorchestrator.platform.optimize.trials import FAILED, TrialResult
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import OptimizationRun, OptimizationTrial
from cryptoorchestrator.platform.storage.runs import json_safe
from cryptoorchestrator.platform.storage.types import utcnow

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED_RUN = "failed"
CANCELLED = "cancelled"
#: Status another process (the API) writes to ask the driver to stop.
CANCEL_REQUESTED = "cancelling"


def open_run(
    settings: Settings,
    *,
    study_key: str,
    strategy: str,
    method: str,
    objective: str,
    space: Mapping[str, Any],
    config: Mapping[str, Any],
) -> tuple[str, dict[str, TrialResult]]:
    """Return the run id of ``study_key`` (created if new) and its finished trials by key.

    Failed trials are not returned: a re-run tries them again.
    """
    with session_scope(settings) as session:
        run = session.scalars(
            select(OptimizationRun)
            .where(OptimizationRun.study_key == study_key)
            .order_by(OptimizationRun.created_at.desc())
            .limit(1)
        ).first()
        if run is None:
            run = OptimizationRun(
                id=str(uuid.uuid4()),
                study_key=study_key,
                strategy=strategy,
                method=method,
                objective=objective,
                space=json_safe(dict(space)),
                config=json_safe(dict(config)),
                status=RUNNING,
                progress=0.0,
                n_trials=0,
            )
            session.add(run)
            return run.id, {}
        run.status = RUNNING
        run.error = None
        run.finished_at = None
        run_id = run.id
        rows = session.scalars(
            select(OptimizationTrial).where(OptimizationTrial.run_id == run_id)
        ).all()
        done: dict[str, TrialResult] = {}
        for row in rows:
            if row.status == FAILED:
                continue
            metrics = {
                k: (float("nan") if v is None else float(v)) for k, v in (row.metrics or {}).items()
            }
            done[row.trial_key] = TrialResult(
                row.trial_key,
                dict(row.params),
                metrics or None,
                float("nan") if row.value is None else row.value,
                row.status,
                row.error,
                reused=True,
            )
        return run_id, done


def record_trials(
    settings: Settings,
    run_id: str,
    results: Sequence[TrialResult],
    *,
    progress: float | None = None,
) -> None:
    """Store finished trials (a trial already stored under its key is replaced)."""
    if not results:
        return
    keys = [r.trial_key for r in results]
    with session_scope(settings) as session:
        old = session.scalars(
            select(OptimizationTrial).where(
                OptimizationTrial.run_id == run_id, OptimizationTrial.trial_key.in_(keys)
            )
        ).all()
        for row in old:
            session.delete(row)
        session.flush()
        now = utcnow()
        for r in results:
            session.add(
                OptimizationTrial(
                    run_id=run_id,
                    trial_key=r.trial_key,
                    params=json_safe(r.params),
                    metrics=json_safe(r.metrics) if r.metrics is not None else None,
                    value=json_safe(r.value),
                    status=r.status,
                    error=r.error,
                    finished_at=now,
                )
            )
        run = session.get(OptimizationRun, run_id)
        if run is not None and progress is not None:
            run.progress = float(progress)


def finish_run(
    settings: Settings,
    run_id: str,
    *,
    status: str,
    n_trials: int,
    best_params: Mapping[str, Any] | None,
    best_value: float | None,
    error: str | None = None,
) -> None:
    """Mark the run finished (succeeded, failed or cancelled) with its best trial."""
    with session_scope(settings) as session:
        run = session.get(OptimizationRun, run_id)
        if run is None:
            return
        run.status = status
        run.n_trials = n_trials
        run.best_params = json_safe(dict(best_params)) if best_params is not None else None
        run.best_value = json_safe(best_value)
        run.error = error
        if status == SUCCEEDED:
            run.progress = 1.0
        run.finished_at = utcnow()


def request_cancel(settings: Settings, run_id: str) -> bool:
    """Ask the driver of a running study to stop (returns False if it is not running)."""
    with session_scope(settings) as session:
        run = session.get(OptimizationRun, run_id)
        if run is None or run.status != RUNNING:
            return False
        run.status = CANCEL_REQUESTED
        return True


def cancel_requested(settings: Settings, run_id: str) -> bool:
    """Return whether someone asked this run to stop."""
    with session_scope(settings) as session:
        run = session.get(OptimizationRun, run_id)
        return run is not None and run.status == CANCEL_REQUESTED
