"""SMA cross: long while the fast simple moving average is above the slow one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.strategy.base import MIN_LIVE_WINDOW, Param, Signals, Strategy
from cryptoorchestrator.platform.strategy.indicators import crossings, sma


class SmaCross(Strategy):
    """Buy when the fast SMA crosses above the slow SMA, sell when it crosses back below.

    When it works: markets with long, persistent trends (BTC's 2017, 2020-21 bull runs), on 1h
    to 1d bars.  It lags by design and bleeds fees and small losses in sideways, choppy ranges;
    longer periods trade less and suffer less from noise.
    """

    name = "sma_cross"
    params = (
        Param("fast", "int", 10, low=2, high=500, doc="fast SMA period (bars)"),
        Param("slow", "int", 50, low=3, high=2000, doc="slow SMA period (bars)"),
    )
    warmup = 2000

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return ``slow + 1`` bars: both SMAs at the last two bars (a cross compares them)."""
        return max(int(params["slow"]) + 1, MIN_LIVE_WINDOW)

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Require ``fast < slow``."""
        if params["fast"] >= params["slow"]:
            raise InvalidInputError(
                "params.fast",
                f"fast ({params['fast']}) must be below slow ({params['slow']})",
                allowed="fast < slow",
            )

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return long entries on the golden cross and exits on the death cross."""
        fast = sma(bars.close, int(params["fast"]))
        slow = sma(bars.close, int(params["slow"]))
        return Signals(*crossings(fast, slow))
