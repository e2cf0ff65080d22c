"""Backtest and optimization runs of one user: how many may wait or run at once.

Each run holds cluster CPU for as long as it lasts, so one tenant submitting without end would
starve every other tenant's studies (and their bots' risk checks).  A user may have at most
``limit`` runs queued or running; more are refused until one finishes or is cancelled.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import ConflictError
from cryptoorchestrator.platform.model import RunStatus
from cryptoorchestrator.platform.storage.models import BacktestRun, OptimizationRun

ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


def active_runs(session: Session, user_id: int) -> int:
    """Return how many of ``user_id``'s backtests and optimizations are queued or running."""
    total = 0
    for model in (BacktestRun, OptimizationRun):
        total += int(
            session.scalar(
                select(func.count())
                .select_from(model)
                .where(model.user_id == user_id, model.status.in_(ACTIVE))
            )
            or 0
        )
    return total


def check_run_quota(session: Session, user_id: int, limit: int) -> None:
    """Refuse a new run while ``user_id`` has ``limit`` runs queued or running.

    Raises
    ------
    ConflictError
        Naming the limit and how to free a slot.
    """
    active = active_runs(session, user_id)
    if active >= limit:
        raise ConflictError(
            f"you have {active} runs queued or running (at most {limit} at once); wait for "
            "one to finish or cancel one"
        )
