"""ATR stops: an EMA trend entry protected by a stop-loss and trailing stop sized from ATR."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy, recursive_memory
from cryptoorchestrator.platform.strategy.indicators import atr, crossed_above, crossed_below, ema
from cryptoorchestrator.platform.strategy.memo import memoised


# The pieces below depend on one or two parameters each, not on all five: wrapped by
# ``memoised``, a sweep computes each once per distinct input and reuses it in the trials that
# share it (see platform.strategy.memo; user strategies may wrap their helpers the same way).
@memoised
def _atr_fraction(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Return the ATR as a fraction of the close, bar by bar."""
    return atr(high, low, close, period) / close  # type: ignore[no-any-return]


@memoised
def _scaled(values: np.ndarray, factor: float) -> np.ndarray:
    """Return ``factor * values`` (a stop distance in ATRs)."""
    return factor * values  # type: ignore[no-any-return]


@memoised
def _trend_entries(close: np.ndarray, trend: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Return crosses of the close above the trend where the ATR is defined."""
    return crossed_above(close, trend) & ~np.isnan(dist)  # type: ignore[no-any-return]


_crossed_below = memoised(crossed_below)


class AtrStops(Strategy):
    """Buy when the close crosses above its EMA; exit on a stop ``atr_mult`` ATRs away.

    The stop-loss distance is ``atr_mult * ATR / close`` at the signal bar, so stops widen in
    volatile markets and tighten in calm ones; ``trail`` turns it into a trailing stop, and
    ``tp_mult > 0`` adds a take-profit ``tp_mult`` ATRs away.  A cross back below the EMA also
    exits.  When it works: trending markets with volatility regimes that change (crypto), and
    with ``sizing="risk"`` in the backtest to risk a fixed share of equity per trade.
    """

    name = "atr_stops"
    params = (
        Param("ema_period", "int", 50, low=2, high=1000, doc="trend EMA period"),
        Param("atr_period", "int", 14, low=2, high=200, doc="ATR period"),
        Param("atr_mult", "float", 2.0, low=0.5, high=10.0, doc="stop distance in ATRs"),
        Param("tp_mult", "float", 0.0, low=0.0, high=20.0, doc="take-profit in ATRs (0: none)"),
        Param("trail", "bool", True, doc="trail the stop behind the best price"),
    )
    warmup = 1000
    sweep_order = ("ema_period", "atr_period", "atr_mult", "tp_mult", "trail")

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return the longer of the EMA's and the ATR's seed plus memory, plus one (a cross)."""
        ema_p, atr_p = int(params["ema_period"]), int(params["atr_period"])
        trend = ema_p + recursive_memory(2.0 / (ema_p + 1))
        stops = atr_p + 1 + recursive_memory(1.0 / atr_p)
        return max(trend, stops) + 1

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return EMA crosses plus per-bar ATR stop distances (fractions of the close)."""
        close = np.asarray(bars.close, dtype=np.float64)
        trend = ema(close, int(params["ema_period"]))
        dist = _atr_fraction(bars.high, bars.low, close, int(params["atr_period"]))
        stop = _scaled(dist, float(params["atr_mult"]))
        tp = _scaled(dist, float(params["tp_mult"])) if params["tp_mult"] > 0 else None
        trail = bool(params["trail"])
        return Signals(
            _trend_entries(close, trend, dist),
            _crossed_below(close, trend),
            stop_loss=None if trail else stop,
            take_profit=tp,
            trailing_stop=stop if trail else None,
        )
