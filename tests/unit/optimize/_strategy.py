"""A minimal SMA-cross strategy for the optimizer's tests, independent of the registry.

A real :class:`Strategy` subclass: the optimizer evaluates strategies through the same contract
as ``co.backtest`` and takes nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy
from cryptoorchestrator.platform.strategy.indicators import crossed_above, crossed_below, sma


class SmaCross(Strategy):
    name = "sma_cross"
    params = (Param("fast", "int", 10, low=2, high=500), Param("slow", "int", 50, low=3, high=1000))

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        fast = sma(bars.close, params["fast"])
        slow = sma(bars.close, params["slow"])
        return Signals(crossed_above(fast, slow), crossed_below(fast, slow))


class Exploding(SmaCross):
    """Raises for one parameter value, to show failed trials are recorded and the study goes on."""

    name = "exploding"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        if params["fast"] == 10:
            raise ZeroDivisionError("boom")
        return super().signals(bars, params)


def random_bars(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000
    return {
        "timestamp": ts,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": np.ones(n),
    }
