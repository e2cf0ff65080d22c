"""RSI mean reversion: buy when RSI leaves oversold, sell when it reaches overbought."""

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
from cryptoorchestrator.platform.strategy.indicators import crossed_above, rsi
from cryptoorchestrator.platform.strategy.memo import memoised

# A crossing of one level depends on (period, level) only: in a sweep, trials that share
# them reuse it (see platform.strategy.memo; user strategies may wrap helpers the same way).
_crossed_above = memoised(crossed_above)


class RsiReversion(Strategy):
    """Buy when RSI crosses back above ``lower``; sell when it crosses above ``upper``.

    When it works: range-bound markets and short timeframes (5m-1h) where moves overshoot and
    revert.  In strong downtrends RSI stays oversold and it keeps buying a falling market, so
    pair it with a stop-loss (``stop_loss`` default 10 %).
    """

    name = "rsi_reversion"
    params = (
        Param("period", "int", 14, low=2, high=200, doc="RSI period"),
        Param("lower", "float", 30.0, low=1.0, high=50.0, doc="oversold level"),
        Param("upper", "float", 70.0, low=50.0, high=99.0, doc="overbought level"),
    )
    stop_loss = 0.10
    warmup = 1000
    sweep_order = ("period", "lower", "upper")

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return the RSI's seed plus the bars Wilder's smoothing takes to forget it, plus one."""
        period = int(params["period"])
        return max(period + 1 + recursive_memory(1.0 / period) + 1, MIN_LIVE_WINDOW)

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Require ``lower < upper``."""
        if params["lower"] >= params["upper"]:
            raise InvalidInputError(
                "params.lower", "lower must be below upper", allowed="lower < upper"
            )

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return entries when RSI leaves oversold and exits when it reaches overbought."""
        r = rsi(bars.close, int(params["period"]))
        return Signals(
            _crossed_above(r, float(params["lower"])), _crossed_above(r, float(params["upper"]))
        )
