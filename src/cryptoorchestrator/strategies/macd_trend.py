"""MACD trend: long while the MACD line is above its signal line and above zero."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.strategy.base import (
    MIN_LIVE_WINDOW,
    Param,
    Signals,
    Strategy,
    recursive_memory,
)
from cryptoorchestrator.platform.strategy.indicators import crossings, ema, macd


class MacdTrend(Strategy):
    """Buy when MACD crosses above its signal line while MACD > 0; sell when it crosses below.

    When it works: established trends on 4h-1d bars; the zero-line filter skips counter-trend
    crosses.  It is late at turning points and churns when MACD hovers around its signal line.
    """

    name = "macd_trend"
    params = (
        Param("fast", "int", 12, low=2, high=200, doc="fast EMA period"),
        Param("slow", "int", 26, low=3, high=400, doc="slow EMA period"),
        Param("signal", "int", 9, low=2, high=100, doc="signal EMA period"),
    )
    warmup = 2000
    sweep_order = ("fast", "slow", "signal")

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return the seeds and memories of the slow EMA and of the signal EMA, plus one."""
        slow, signal = int(params["slow"]), int(params["signal"])
        memory = recursive_memory(2.0 / (slow + 1)) + recursive_memory(2.0 / (signal + 1))
        return max(slow + signal + memory + 1, MIN_LIVE_WINDOW)

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Require ``fast < slow``."""
        if params["fast"] >= params["slow"]:
            raise InvalidInputError("params.fast", "fast must be below slow", allowed="fast < slow")

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return MACD/signal crosses, entries only above the zero line.

        The MACD line is taken from ``macd(close, fast, slow, 1)`` and the signal line is
        ``ema(line, signal)``: the same floats as ``macd(close, fast, slow, signal)``'s lines
        wherever both are defined (its signal EMA is TA-Lib's EMA of the line), and the line
        a few bars earlier, where the signal line is still NaN and nothing crosses.  The line
        does not depend on ``signal``, so a sweep computes it once per ``(fast, slow)``.
        """
        line = macd(bars.close, int(params["fast"]), int(params["slow"]), 1)[0]
        sig = ema(line, int(params["signal"]))
        up, down = crossings(line, sig)
        # NaN > 0 is False: no entry before the line starts
        return Signals(up & (line > 0.0), down)
