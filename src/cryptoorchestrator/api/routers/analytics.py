"""``/api/analytics``: performance and risk utilisation of your bots.

``/performance``: P&L, return, Sharpe, drawdown and win rate, as defined in
:mod:`cryptoorchestrator.platform.services.analytics`.  ``/risk``: limits, live utilisation and
breaches, through the cluster facade (503 "not available" without a cluster).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from cryptoorchestrator.api.deps import ClusterDep, CurrentUser, SessionDep, has_role
from cryptoorchestrator.api.routers.params import NOT_AVAILABLE
from cryptoorchestrator.api.schemas import (
    BotPerformancePublic,
    PerformancePublic,
    PerformanceReportPublic,
)
from cryptoorchestrator.platform.services.analytics import PerformanceQueries

router = APIRouter(prefix="/api/analytics", tags=["analytics"])

BotId = Annotated[
    int | None, Query(alias="botId", ge=1, le=2_147_483_647, description="only this bot")
]


@router.get("/performance")
def performance(db: SessionDep, user: CurrentUser, bot_id: BotId = None) -> PerformanceReportPublic:
    """Return the performance of each of your bots (or only ``botId``) and of their portfolio.

    Realized P&L sums the fills' ``realizedPnl``; unrealized P&L is the latest equity snapshot
    less the starting balance and the realized P&L.  Sharpe is annualised over 365 days from the
    simple returns between equity snapshots (``mean / std * sqrt(periods per year)``, periods
    per year from the median snapshot interval, no risk-free rate); max drawdown is the largest
    fall from a running peak of equity; win rate is the share of closing fills with a positive
    P&L.  Ratios that cannot be computed are null.  Archived bots are included (``archived``).
    """
    report = PerformanceQueries(db, user.id).report(bot_id)
    return PerformanceReportPublic(
        portfolio=PerformancePublic(**asdict(report.portfolio)),
        bots=[
            BotPerformancePublic(
                bot_id=b.bot_id,
                name=b.name,
                trading_pair=b.trading_pair,
                archived=b.archived,
                **asdict(b.performance),
            )
            for b in report.bots
        ],
    )


@router.get("/risk", responses=NOT_AVAILABLE)
async def analytics_risk(user: CurrentUser, cluster: ClusterDep) -> dict[str, Any]:
    """Limits, live utilisation of your bots and their recent breaches.

    Admins also get the whole portfolio's totals under ``portfolio``.
    """
    return await cluster.risk_utilisation(user.id, portfolio=has_role(user, "admin"))
