"""Bollinger breakout: buy a close above the upper band, exit at the middle band."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from cryptoorchestrator.indicators.nb.common import fill_nan_nb, first_valid_nb
from cryptoorchestrator.indicators.nb.fma import fma_nb
from cryptoorchestrator.indicators.nb.overlap import variance_nb
from cryptoorchestrator.platform.strategy.base import MIN_LIVE_WINDOW, Param, Signals, Strategy
from cryptoorchestrator.platform.strategy.indicators import crossed_below, sma
from cryptoorchestrator.platform.strategy.memo import memoised


# The bands split into what depends on the period alone (the middle band, the deviation, the
# exits), which a sweep computes once per period, and one pass per trial that forms the upper
# band ``fma(dev, nbdev, middle)`` bar by bar and tests the cross: the floats of
# ``bbands(close, period, nbdev, nbdev)``'s SMA path, whose running sums are those of separate
# SMA and VAR passes (tests/unit/optimize/test_signal_forms.py compares them bit for bit).
@njit(cache=True, nogil=True)
def _deviation_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    n = x.shape[0]
    start = first_valid_nb(x) + period - 1
    fill_nan_nb(out, start)
    if start >= n:
        return
    variance_nb(x, start, period, out)
    for i in range(start, n):
        var = out[i]
        out[i] = math.sqrt(var) if var != 0.0 else 0.0


@memoised
def _deviation(close: np.ndarray, period: int) -> np.ndarray:
    """Return the population standard deviation of the last ``period`` closes (BBANDS')."""
    out = np.empty(close.shape[0])
    _deviation_nb(np.asarray(close, dtype=np.float64), period, out)
    return out


@njit(cache=True, nogil=True)
def _above_band_nb(
    close: np.ndarray, middle: np.ndarray, dev: np.ndarray, k: float, out: np.ndarray
) -> None:
    n = close.shape[0]
    if n == 0:
        return
    out[0] = False
    prev = fma_nb(dev[0], k, middle[0])
    for i in range(1, n):
        band = fma_nb(dev[i], k, middle[i])
        # ``<=`` spelled out, as crossed_above does, so that a NaN band never crosses
        out[i] = (close[i] > band) & (close[i - 1] <= prev)
        prev = band


def _crossed_above_band(
    close: np.ndarray, middle: np.ndarray, dev: np.ndarray, k: float
) -> np.ndarray:
    """Return ``crossed_above(close, middle + k * dev)``, the band rounded once (an FMA)."""
    out = np.empty(close.shape[0], dtype=np.bool_)
    _above_band_nb(close, middle, dev, float(k), out)
    return out


_crossed_below = memoised(crossed_below)


class BollingerBreakout(Strategy):
    """Buy when the close breaks above the upper Bollinger band; sell below the middle band.

    When it works: volatility expansions after quiet periods (a squeeze), typical of crypto
    breakouts on 1h-4h bars.  False breakouts in ranges produce quick small losses; a wider
    ``nbdev`` trades less often.
    """

    name = "bollinger_breakout"
    params = (
        Param("period", "int", 20, low=2, high=500, doc="band period"),
        Param("nbdev", "float", 2.0, low=0.5, high=5.0, doc="band width in standard deviations"),
    )
    warmup = 500
    sweep_order = ("period", "nbdev")

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return ``period + 1`` bars: the bands at the last two bars (a cross compares them)."""
        return max(int(params["period"]) + 1, MIN_LIVE_WINDOW)

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return breakouts above the upper band and crosses below the middle band.

        The bands are ``bbands(close, period, nbdev, nbdev)``'s, float for float: the middle
        band and the deviation depend on ``period`` alone, so a sweep computes them once per
        period and forms each trial's upper band in the pass that tests the cross.
        """
        close = np.asarray(bars.close, dtype=np.float64)
        period = int(params["period"])
        middle = sma(bars.close, period)
        dev = _deviation(bars.close, period)
        entries = _crossed_above_band(close, middle, dev, float(params["nbdev"]))
        return Signals(entries, _crossed_below(bars.close, middle))
