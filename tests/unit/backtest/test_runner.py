"""run_backtest / co.backtest: stops from strategies, per-bar ATR stops, annualisation, errors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import cryptoorchestrator as co
from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.backtest.runner import infer_timeframe, run_backtest
from cryptoorchestrator.platform.errors import InvalidInputError, StrategyError
from cryptoorchestrator.platform.model.timeframe import periods_per_year
from cryptoorchestrator.platform.strategy.bars import Bars, as_bars
from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy

# 2021-01-01 UTC in ms: timestamps must be dates (1990-2100) in some unit.
T0 = 1_609_459_200_000


def _bars(n: int = 3000, seed: int = 1, step_ms: int = 3_600_000) -> Bars:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    return as_bars(
        {
            "timestamp": T0 + np.arange(n) * step_ms,
            "open": o,
            "high": np.maximum(o, c) * 1.004,
            "low": np.minimum(o, c) * 0.996,
            "close": c,
            "volume": np.ones(n),
        }
    )


class EveryTenth(Strategy):
    name = "every_tenth"
    params = (Param("period", "int", 10, low=2, high=100),)
    stop_loss = 0.01

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        n = len(bars.close)
        entries = np.arange(n) % params["period"] == 0
        return Signals(entries, np.arange(n) % params["period"] == 5)


def test_strategy_default_stop_applies_and_config_overrides() -> None:
    bars = _bars()
    res = run_backtest(EveryTenth(), bars, {})
    reasons = res.orders.column("reason").to_pylist()
    assert "stop_loss" in reasons
    stopped = res.trades.filter(
        res.trades.column("exit_reason").to_numpy(zero_copy_only=False) == "stop_loss"
    ).to_pandas()
    # a 1% stop exits at 99% of the entry unless the bar opened below it (gap)
    assert (stopped["exit_price"] <= stopped["entry_price"] * 0.99 + 1e-9).all()
    loose = run_backtest(EveryTenth(), bars, {}, config=SimConfig(stop_loss=0.5))
    assert "stop_loss" not in loose.orders.column("reason").to_pylist()


def test_atr_stops_trail_per_bar_and_risk_sizing() -> None:
    bars = _bars(5000, seed=4)
    res = co.backtest(
        "atr_stops", bars, {"ema_period": 20, "atr_mult": 1.5}, fee_bps=10, sizing="risk", size=0.01
    )
    reasons = set(res.trades.column("exit_reason").to_pylist())
    assert "trailing_stop" in reasons
    # risk sizing: loss at the initial stop would be 1% of equity, so positions are small
    first = res.orders.to_pandas().iloc[0]
    assert first["qty"] * first["price"] < 10_000.0


def test_annualisation_uses_the_timeframe() -> None:
    hourly = _bars(2000)
    daily = _bars(2000, step_ms=86_400_000)
    assert infer_timeframe(hourly.timestamp) == "1h"
    r_h = co.backtest("sma_cross", hourly, {"fast": 5, "slow": 20})
    r_d = co.backtest("sma_cross", daily, {"fast": 5, "slow": 20})
    assert r_h.metrics["total_return"] == r_d.metrics["total_return"]
    ratio = math.sqrt(periods_per_year("1h") / periods_per_year("1d"))
    assert r_h.metrics["sharpe"] == pytest.approx(r_d.metrics["sharpe"] * ratio, rel=1e-12)
    assert r_h.timeframe == "1h"


def test_result_tables_and_equity_curve() -> None:
    res = co.backtest("sma_cross", _bars(), {"fast": 5, "slow": 20}, fee_bps=10)
    df = res.trades.to_pandas()
    assert len(df) == res.metrics["trade_count"] + res.metrics["open_trades"]
    assert (df["exit_bar"] >= df["entry_bar"]).all()
    curve = res.equity_curve
    assert curve.num_rows == 3000
    assert curve.column("drawdown").to_numpy().min() == pytest.approx(-res.metrics["max_drawdown"])
    assert res.orders.column("fee").to_numpy().sum() == pytest.approx(res.metrics["fees_paid"])
    assert res.summary()["metrics"]["trade_count"] == res.metrics["trade_count"]


def test_errors_from_the_sdk_name_fields() -> None:
    bars = _bars(200)
    with pytest.raises(InvalidInputError, match="params.slow"):
        co.backtest("sma_cross", bars, {"fast": 5, "slow": 1})
    with pytest.raises(InvalidInputError, match="sizing mode"):
        co.backtest("sma_cross", bars, sizing="all")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="timestamps differ"):
        co.backtest("sma_cross", {"A": _bars(100), "B": _bars(99)})

    class Raises(EveryTenth):
        name = "raises"

        def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
            raise KeyError("column")

    with pytest.raises(StrategyError, match="raises"):
        co.backtest(Raises, bars)


def test_next_open_fills_follow_signal_bars() -> None:
    bars = _bars(500)
    res = run_backtest(EveryTenth(), bars, {}, config=SimConfig(stop_loss=0.9))
    o = res.order_records
    assert set((o[:, nb.O_BAR] % 10).astype(int)) <= {1, 6}
    np.testing.assert_array_equal(o[:, nb.O_PRICE], bars.open[o[:, nb.O_BAR].astype(int)])
