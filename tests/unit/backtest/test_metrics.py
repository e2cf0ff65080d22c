"""Metrics from the kernel's statistics equal a plain numpy computation over the equity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.metrics import METRIC_NAMES, metrics_from_stats
from cryptoorchestrator.platform.model.timeframe import periods_per_year


def test_metrics_match_numpy_reference() -> None:
    rng = np.random.default_rng(11)
    n = 4000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    out = simulate(
        close,
        close,
        close,
        close,
        rng.random(n) < 0.02,
        rng.random(n) < 0.02,
        config=SimConfig(fee_bps=10, fill="close"),
    )
    ppy = periods_per_year("1h")
    m = metrics_from_stats(out.stats, 10_000.0, ppy)
    assert set(m) == set(METRIC_NAMES)
    eq = out.equity
    r = np.diff(np.r_[10_000.0, eq]) / np.r_[10_000.0, eq[:-1]]
    assert m["total_return"] == pytest.approx(eq[-1] / 10_000 - 1, rel=1e-12)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(ppy), rel=1e-7)
    down = np.sqrt(np.mean(np.minimum(r, 0) ** 2))
    assert m["sortino"] == pytest.approx(r.mean() / down * math.sqrt(ppy), rel=1e-7)
    assert m["volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(ppy), rel=1e-7)
    peak = np.maximum.accumulate(np.r_[10_000.0, eq])[1:]
    dd = 1 - eq / peak
    assert m["max_drawdown"] == pytest.approx(dd.max(), rel=1e-12)
    under = dd > 0
    longest, run = 0, 0
    for u in under:
        run = run + 1 if u else 0
        longest = max(longest, run)
    assert m["max_drawdown_duration"] == longest
    years = n / ppy
    assert m["cagr"] == pytest.approx((eq[-1] / 10_000) ** (1 / years) - 1, rel=1e-9)
    assert m["calmar"] == pytest.approx(m["cagr"] / m["max_drawdown"], rel=1e-12)
    closed = out.trades[out.trades[:, nb.T_OPEN] == 0]
    pnl = closed[:, nb.T_PNL]
    assert m["trade_count"] == len(closed)
    assert m["win_rate"] == pytest.approx((pnl > 0).mean())
    assert m["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl <= 0].sum())
    assert m["expectancy"] == pytest.approx(pnl.mean())
    durations = closed[:, nb.T_EXIT_BAR] - closed[:, nb.T_ENTRY_BAR]
    assert m["avg_trade_duration"] == pytest.approx(durations.mean())
    assert m["fees_paid"] == pytest.approx(out.orders[:, nb.O_FEE].sum())
    stats2 = nb.equity_stats_nb(eq, 10_000.0)
    for s in (nb.S_SUM_RET, nb.S_SUM_RET_SQ, nb.S_MAX_DD, nb.S_MAX_DD_DURATION):
        assert stats2[s] == pytest.approx(out.stats[s], rel=1e-12)


def test_no_trades_gives_nan_ratios_not_errors() -> None:
    c = np.full(100, 5.0)
    out = simulate(c, c, c, c, None, None, config=SimConfig())
    m = metrics_from_stats(out.stats, 10_000.0, 365.0)
    assert m["total_return"] == 0.0
    assert m["trade_count"] == 0
    assert math.isnan(m["win_rate"])
    assert math.isnan(m["sharpe"])
