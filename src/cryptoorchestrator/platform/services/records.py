"""Read-only queries over one user's stored runs and risk records.

Backtest and optimization runs are listed newest first and found only among the user's own
(another user's run is "not found", never "forbidden"); risk limits and events are those that
apply to the user's bots.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.risk.limits import user_scope
from cryptoorchestrator.platform.storage.models import (
    BacktestRun,
    Bot,
    OptimizationRun,
    RiskEvent,
    RiskLimit,
)


class RunRecords:
    """Backtest and optimization runs of one user.

    Parameters
    ----------
    session
        The request's session.
    user_id
        Whose runs.
    """

    def __init__(self, session: Session, user_id: int) -> None:
        self.session = session
        self.user_id = user_id

    def backtests(self, limit: int) -> Sequence[BacktestRun]:
        """Return the newest ``limit`` backtest runs."""
        return self.session.scalars(
            select(BacktestRun)
            .where(BacktestRun.user_id == self.user_id)
            .order_by(BacktestRun.created_at.desc())
            .limit(limit)
        ).all()

    def backtest(self, run_id: str) -> BacktestRun:
        """Return one backtest run, or raise :class:`NotFoundError`."""
        run = self.session.scalar(
            select(BacktestRun).where(BacktestRun.id == run_id, BacktestRun.user_id == self.user_id)
        )
        if run is None:
            raise NotFoundError(f"backtest {run_id} not found")
        return run

    def optimizations(self, limit: int) -> Sequence[OptimizationRun]:
        """Return the newest ``limit`` optimization runs."""
        return self.session.scalars(
            select(OptimizationRun)
            .where(OptimizationRun.user_id == self.user_id)
            .order_by(OptimizationRun.created_at.desc())
            .limit(limit)
        ).all()

    def optimization(self, run_id: str) -> OptimizationRun:
        """Return one optimization run, or raise :class:`NotFoundError`."""
        run = self.session.scalar(
            select(OptimizationRun).where(
                OptimizationRun.id == run_id, OptimizationRun.user_id == self.user_id
            )
        )
        if run is None:
            raise NotFoundError(f"optimization {run_id} not found")
        return run


class RiskRecords:
    """Risk limits and events that apply to one user's bots.

    Parameters
    ----------
    session
        The request's session.
    user_id
        Whose bots.
    """

    def __init__(self, session: Session, user_id: int) -> None:
        self.session = session
        self.user_id = user_id

    def limits(self) -> Sequence[RiskLimit]:
        """Return the limits that apply: the portfolio's, the user's own, their bots'."""
        bot_scopes = [
            f"bot:{i}"
            for i in self.session.scalars(select(Bot.id).where(Bot.user_id == self.user_id))
        ]
        return self.session.scalars(
            select(RiskLimit)
            .where(RiskLimit.scope.in_(["portfolio", user_scope(self.user_id), *bot_scopes]))
            .order_by(RiskLimit.scope, RiskLimit.name)
        ).all()

    def events(self, limit: int) -> Sequence[RiskEvent]:
        """Return the newest ``limit`` denials, breaches and kill switches of the user's bots."""
        bot_ids = select(Bot.id).where(Bot.user_id == self.user_id).scalar_subquery()
        return self.session.scalars(
            select(RiskEvent)
            .where(RiskEvent.bot_id.in_(bot_ids))
            .order_by(RiskEvent.created_at.desc(), RiskEvent.id.desc())
            .limit(limit)
        ).all()
