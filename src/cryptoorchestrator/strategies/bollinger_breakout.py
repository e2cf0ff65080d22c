"""Bollinger breakout: buy a close above the upper band, exit at the middle band."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptoorchestrator.platform.strategy.base import MIN_LIVE_WINDOW, Param, Signals, Strategy
from cryptoorchestrator.platform.strategy.indicators import bbands, crossed_above, crossed_below


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

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return ``period + 1`` bars: the bands at the last two bars (a cross compares them)."""
        return max(int(params["period"]) + 1, MIN_LIVE_WINDOW)

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return breakouts above the upper band and crosses below the middle band."""
        dev = float(params["nbdev"])
        upper, middle, _ = bbands(bars.close, int(params["period"]), dev, dev)
        return Signals(crossed_above(bars.close, upper), crossed_below(bars.close, middle))
