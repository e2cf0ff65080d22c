"""A minimal SMA-cross strategy for the optimizer's tests, independent of the registry, and the
bars, spaces and settings those tests share.

A real :class:`Strategy` subclass: the optimizer evaluates strategies through the same contract
as ``co.backtest`` and takes nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.optimize.objective import parse_objective, parse_result_filter
from cryptoorchestrator.platform.optimize.study import StudySpec, build_study
from cryptoorchestrator.platform.optimize.trials import BarArrays, TrialConfig, bars_to_arrays
from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy
from cryptoorchestrator.platform.strategy.indicators import crossed_above, crossed_below, sma

#: The SMA cross's 10 x 19 grid (174 pairs with ``fast < slow``).
GRID_SPACE = {"fast": range(5, 55, 5), "slow": range(20, 210, 10)}
#: A 3 x 2 grid, small enough to run serially in any test.
SMALL_SPACE = {"fast": [5, 10, 20], "slow": [30, 60]}


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


def random_arrays(n: int, seed: int = 0) -> BarArrays:
    """Return :func:`random_bars` as the optimizer's arrays."""
    return bars_to_arrays(random_bars(n, seed=seed))


def sma_study(n_bars: int, bars_seed: int, /, **study: Any) -> StudySpec:
    """Return the validated :class:`SmaCross` study ``study`` (``build_study`` keywords).

    Its bars are ``random_arrays(n_bars, bars_seed)``; ``study`` may hold a ``seed`` of its own.
    """
    return build_study(SmaCross(), random_arrays(n_bars, bars_seed), **study)


def trial_config(**result_filter: Any) -> TrialConfig:
    """Return the trial settings these tests share: 10 bps fees, hourly bars, the Sharpe ratio."""
    return TrialConfig(
        SimConfig(fee_bps=10),
        8760.0,
        parse_objective("sharpe"),
        parse_result_filter(**result_filter),
    )
