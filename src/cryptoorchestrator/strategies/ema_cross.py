"""EMA cross: the SMA cross with exponential averages, optionally trading both sides."""

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
from cryptoorchestrator.platform.strategy.indicators import crossings, ema


class EmaCross(Strategy):
    """Go long when the fast EMA crosses above the slow EMA; with ``short``, also go short.

    When it works: trending markets, reacting faster than the SMA cross (EMAs weight recent bars
    more), at the price of more whipsaws in ranges.  ``short=True`` makes it always in the market
    (a stop-and-reverse system), which pays in two-way trends such as 2018 and 2022 crypto bear
    markets and costs twice the fees in chop.
    """

    name = "ema_cross"
    params = (
        Param("fast", "int", 12, low=2, high=500, doc="fast EMA period"),
        Param("slow", "int", 26, low=3, high=2000, doc="slow EMA period"),
        Param("short", "bool", False, doc="also trade the short side"),
    )
    warmup = 2000

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return the slow EMA's seed plus the bars it takes to forget it, plus one (a cross)."""
        slow = int(params["slow"])
        return max(slow + recursive_memory(2.0 / (slow + 1)) + 1, MIN_LIVE_WINDOW)

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Require ``fast < slow``."""
        if params["fast"] >= params["slow"]:
            raise InvalidInputError(
                "params.fast",
                f"fast ({params['fast']}) must be below slow ({params['slow']})",
                allowed="fast < slow",
            )

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return crosses of the fast EMA over the slow EMA as entries and exits."""
        fast = ema(bars.close, int(params["fast"]))
        slow = ema(bars.close, int(params["slow"]))
        up, down = crossings(fast, slow)  # both crosses in one pass
        if params["short"]:
            return Signals(up, down, down, up)
        return Signals(up, down)
