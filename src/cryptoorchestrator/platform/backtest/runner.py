"""Run a strategy over bars: validate, compute signals inside the guard, simulate, wrap up.

This is the high-level path behind ``co.backtest`` and ``cryptoorch backtest``; the optimizer
uses :func:`~cryptoorchestrator.platform.backtest.engine.simulate` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.backtest.result import BacktestResult
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.timeframe import (
    TIMEFRAMES,
    periods_per_year,
    timeframe_to_ms,
)
from cryptoorchestrator.platform.strategy.bars import Bars
from cryptoorchestrator.platform.strategy.base import Signals, Strategy, run_signals

_YEAR_MS = 365 * 86_400_000


def infer_timeframe(timestamp: np.ndarray) -> str | None:
    """Return the timeframe whose length is the most common bar spacing, if it is one."""
    if timestamp.shape[0] < 2:
        return None
    step = int(np.median(np.diff(timestamp[: min(len(timestamp), 10_001)])))
    for tf in TIMEFRAMES:
        if timeframe_to_ms(tf) == step:
            return tf
    return None


def _ppy(timeframe: str | None, timestamp: np.ndarray) -> float:
    if timeframe is not None:
        return periods_per_year(timeframe)
    if timestamp.shape[0] >= 2:
        step = float(np.median(np.diff(timestamp[: min(len(timestamp), 10_001)])))
        if step > 0:
            return _YEAR_MS / step
    return periods_per_year("1d")


def _stack(sigs: list[Signals], name: str, n: int) -> np.ndarray | None:
    arrays = [getattr(s, name) for s in sigs]
    if all(a is None for a in arrays):
        return None
    is_stop = name in ("stop_loss", "take_profit", "trailing_stop")
    filler = np.full(n, np.nan) if is_stop else np.zeros(n, dtype=np.bool_)
    return np.column_stack([filler if a is None else a for a in arrays])


def _merge_stop(strategy_value: float | None, config_value: float | None) -> float | None:
    return config_value if config_value is not None else strategy_value


def run_backtest(
    strategy: Strategy,
    bars: Bars | Mapping[str, Bars],
    params: Mapping[str, Any] | None = None,
    *,
    config: SimConfig | None = None,
    timeframe: str | None = None,
) -> BacktestResult:
    """Backtest ``strategy`` on one symbol's bars or on several symbols sharing one cash.

    ``params`` are validated against the strategy's declaration (defaults filled in).  Stops
    come from, in order of precedence: ``config``, per-bar arrays in the signals, the strategy's
    class defaults.  Several symbols must share the same timestamps.

    Raises
    ------
    InvalidInputError
        Bad parameters, misaligned symbols, or bad settings.
    StrategyError
        If the strategy's code raises.
    """
    cfg = config if config is not None else SimConfig()
    checked = strategy.validate_params(params)
    series = dict(bars) if isinstance(bars, Mapping) else {bars.symbol or "asset": bars}
    if not series:
        raise InvalidInputError("bars", "no symbols given", allowed=">= 1 symbol")
    symbols = tuple(series)
    first = series[symbols[0]]
    for sym in symbols[1:]:
        other = series[sym]
        if len(other) != len(first) or not np.array_equal(other.timestamp, first.timestamp):
            raise InvalidInputError(
                f"bars[{sym}]",
                f"timestamps differ from {symbols[0]}'s; align the symbols first",
                allowed="identical timestamps across symbols",
            )
    tf = timeframe or first.timeframe or infer_timeframe(first.timestamp)
    n = len(first)
    sigs = [run_signals(strategy, series[s], checked) for s in symbols]
    if len(symbols) == 1:
        s0 = sigs[0]
        prices: tuple[np.ndarray, ...] = (first.open, first.high, first.low, first.close)
        arrays: list[np.ndarray | None] = list(s0)
    else:
        prices = tuple(
            np.column_stack([getattr(series[s], f) for s in symbols])
            for f in ("open", "high", "low", "close")
        )
        arrays = [_stack(sigs, name, n) for name in Signals._fields]
    eff = cfg
    strategy_stops = {
        "stop_loss": _merge_stop(strategy.stop_loss, cfg.stop_loss),
        "take_profit": _merge_stop(strategy.take_profit, cfg.take_profit),
        "trailing_stop": _merge_stop(strategy.trailing_stop, cfg.trailing_stop),
    }
    stops: dict[str, Any] = {}
    for i, name in enumerate(("stop_loss", "take_profit", "trailing_stop")):
        per_bar = arrays[4 + i]
        config_value = getattr(cfg, name)
        stops[name] = (
            config_value
            if config_value is not None
            else (per_bar if per_bar is not None else strategy_stops[name])
        )
    equity = np.empty(n, dtype=np.float64)
    out = simulate(
        prices[0],
        prices[1],
        prices[2],
        prices[3],
        arrays[0],
        arrays[1],
        arrays[2],
        arrays[3],
        config=eff,
        equity_out=equity,
        stop_loss=stops["stop_loss"],
        take_profit=stops["take_profit"],
        trailing_stop=stops["trailing_stop"],
    )
    metrics = metrics_from_stats(out.stats, cfg.init_cash, _ppy(tf, first.timestamp))
    close = prices[3] if prices[3].ndim == 2 else prices[3].reshape(-1, 1)
    return BacktestResult(
        strategy=strategy.name or type(strategy).__name__,
        params=checked,
        config=cfg,
        symbols=symbols,
        timeframe=tf,
        metrics=metrics,
        equity=out.equity,
        timestamp=first.timestamp,
        close=close,
        order_records=out.orders,
        trade_records=out.trades,
    )
