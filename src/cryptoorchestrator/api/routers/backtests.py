"""``/api/backtests``: your stored backtest runs, and submitting or cancelling them through the
cluster facade (503 "not available" without a cluster).

Viewers read; traders also submit and cancel.  ``GET /api/backtests/{id}/report`` serves the
dashboard a finished run's candles, fills, equity and drawdown, recomputed from its stored spec
(runs store their metrics only).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, status

from cryptoorchestrator.api.deps import (
    ClusterDep,
    ContextDep,
    RunQuota,
    RunsDep,
    TraderUser,
    registry_validator,
)
from cryptoorchestrator.api.routers.params import NOT_AVAILABLE, Limit, RunId
from cryptoorchestrator.api.schemas import BacktestCreate, BacktestRunPublic, RunSubmitted
from cryptoorchestrator.cluster.jobs import SPEC_KEY, backtest_from_spec
from cryptoorchestrator.platform.errors import ConflictError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS

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


def _finite(values: Any) -> list[float | None]:
    """Floats for JSON, NaN and infinities as null."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


@router.get("/{run_id}/report")
def backtest_report(
    run_id: RunId,
    runs: RunsDep,
    context: ContextDep,
    max_bars: Annotated[int, Query(alias="maxBars", ge=10, le=20_000)] = 5000,
) -> dict[str, Any]:
    """Candles, fills, equity and drawdown of a finished backtest (409 while it is not).

    Runs store their metrics only: the report runs the backtest again on the head node from
    the stored spec (the same strategy, parameters, data range and fees, so the same result),
    once: the last few reports are kept.  At most the last ``maxBars`` bars are returned
    (``truncated`` says so); the metrics are the stored ones, over the whole run.
    """
    run = runs.backtest(run_id)
    if run.status != "succeeded":
        raise ConflictError(f"backtest {run_id} is {run.status}, not succeeded")
    return context.reports.get((run.id, max_bars), lambda: _report(run, context, max_bars))  # type: ignore[no-any-return]


def _report(run: Any, context: Any, max_bars: int) -> dict[str, Any]:
    """Compute a finished run's report (see :func:`backtest_report`)."""
    spec = dict((run.config or {}).get(SPEC_KEY) or {})
    spec.setdefault("strategy", run.strategy)
    spec.setdefault("params", run.params or {})
    for key in ("exchange", "symbol", "timeframe"):
        if not spec.get(key) and getattr(run, key, None):
            spec[key] = getattr(run, key)
    result, bars = backtest_from_spec(context.settings, spec)
    exchange = spec.get("exchange", "binance")
    symbol = spec.get("symbol", "BTC/USDT")
    timeframe = spec.get("timeframe", "1h")
    n = len(result.timestamp)
    first = max(0, n - max_bars)
    cols = {c: bars.column(c).to_numpy()[first:] for c in ("open", "high", "low", "close")}
    stamps = result.timestamp[first:]
    fills = result.orders.to_pylist()
    return {
        "id": run.id,
        "strategy": run.strategy,
        "params": result.params,
        "exchange": exchange,
        "symbol": symbol,
        "timeframe": timeframe,
        "feeBps": float(spec.get("fee_bps", DEFAULT_FEE_BPS)),
        "metrics": run.metrics or {},
        "bars": n,
        "truncated": first > 0,
        "candles": {
            "timestamp": [int(t) for t in stamps],
            **{c: _finite(v) for c, v in cols.items()},
        },
        "equity": _finite(result.equity[first:]),
        "drawdown": _finite(result.drawdown[first:]),
        "fills": [
            {
                "timestamp": int(f["timestamp"]),
                "side": f["side"],
                "price": f["price"],
                "qty": f["qty"],
                "fee": f["fee"],
                "reason": f["reason"],
            }
            for f in fills
            if f["bar"] >= first
        ],
    }
