"""Run a strategy over bars: validate, compute signals inside the guard, simulate, wrap up.

This is the high-level path behind ``co.backtest`` and ``cryptoorch backtest``.  Signals and
stops reach the engine through :mod:`~cryptoorchestrator.platform.backtest.evaluate`, the same
contract optimizer trials, walk-forward windows and live bots use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.backtest.evaluate import (
    engine_inputs,
    simulate_inputs,
    stack_signals,
)
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.backtest.result import BacktestResult
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms
from cryptoorchestrator.platform.model.timestamps import (
    annualisation,
    bar_spacing_ms,
    timestamp_unit,
)
from cryptoorchestrator.platform.strategy.bars import Bars
from cryptoorchestrator.platform.strategy.base import Strategy, run_signals


def infer_timeframe(timestamp: np.ndarray) -> str | None:
    """Return the timeframe whose length is the median spacing of ms-dated bars, if it is one."""
    step = bar_spacing_ms(timestamp)
    if step is None or timestamp_unit(timestamp) != "ms":
        return None
    for tf in TIMEFRAMES:
        if timeframe_to_ms(tf) == step:
            return tf
    return None


class _Prices(NamedTuple):
    """Several symbols' prices as 2-D ``(n_bars, n_symbols)`` arrays, as the engine takes them."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


def run_backtest(
    strategy: Strategy,
    bars: Bars | Mapping[str, Bars],
    params: Mapping[str, Any] | None = None,
    *,
    config: SimConfig | None = None,
    timeframe: str | None = None,
    warmup: int = 0,
) -> BacktestResult:
    """Backtest ``strategy`` on one symbol's bars or on several symbols sharing one cash.

    ``params`` are validated against the strategy's declaration (defaults filled in).  Stops
    come from, in order of precedence: ``config``, per-bar arrays in the signals, the strategy's
    class defaults (:func:`~cryptoorchestrator.platform.backtest.evaluate.resolve_stops`, the
    rule the optimizer, walk-forward and live bots share).  Several symbols must share the same
    timestamps.  The first ``warmup`` bars only warm the indicators: signals are computed over
    all bars, trading, equity and metrics cover the bars after them (as a walk-forward test
    window is evaluated after its train window).

    Annualised metrics use ``timeframe`` (else the bars' own) or the bars' median spacing; bars
    without timestamps need one of the two.

    Raises
    ------
    InvalidInputError
        Bad parameters, misaligned symbols, bad settings, or no way to tell the bar interval
        (``timeframe``, with the allowed values) or a timeframe that contradicts it.
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
    tf = timeframe or first.timeframe
    # Annualisation is settled before any strategy code runs: bars without timestamps need the
    # timeframe, and a timeframe must match the bars' spacing.
    ppy = annualisation(first.timestamp, tf)
    tf = tf or infer_timeframe(first.timestamp)
    n = len(first)
    sigs = [run_signals(strategy, series[s], checked) for s in symbols]
    if len(symbols) == 1:
        prices: Any = first
        signals = sigs[0]
    else:
        prices = _Prices(
            *(
                np.column_stack([getattr(series[s], f) for s in symbols])
                for f in ("open", "high", "low", "close")
            )
        )
        signals = stack_signals(sigs, n)
    inputs = engine_inputs(strategy, signals, prices, cfg, start=warmup)
    out = simulate_inputs(inputs, cfg, equity_out=np.empty(n - warmup, dtype=np.float64))
    metrics = metrics_from_stats(out.stats, cfg.init_cash, ppy)
    close = inputs.close if inputs.close.ndim == 2 else inputs.close.reshape(-1, 1)
    return BacktestResult(
        strategy=strategy.name or type(strategy).__name__,
        params=checked,
        config=cfg,
        symbols=symbols,
        timeframe=tf,
        metrics=metrics,
        equity=out.equity,
        timestamp=first.timestamp[warmup:],
        close=close,
        order_records=out.orders,
        trade_records=out.trades,
        ohlc=(first.open[warmup:], first.high[warmup:], first.low[warmup:], first.close[warmup:]),
    )
