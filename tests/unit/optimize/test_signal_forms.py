"""The built-in strategies' sweep-friendly signal forms equal their plain formulas, bit for bit.

Some built-ins compute their signals from pieces that a sweep reuses across trials (a MACD line
per ``(fast, slow)``, a crossing per RSI level, ATR stop distances per multiple).  Here each
strategy's signals, alone and inside an indicator cache (reused pieces, read-only arrays), are
compared with the direct formula they replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from _strategy import random_bars

from cryptoorchestrator import indicators as ci
from cryptoorchestrator.platform.optimize.trials import bars_to_arrays
from cryptoorchestrator.platform.strategy.base import Signals, run_signals
from cryptoorchestrator.platform.strategy.memo import indicator_cache
from cryptoorchestrator.strategies.registry import get_strategy


def _macd(bars: Any, p: Mapping[str, Any]) -> Signals:
    line, sig, _ = ci.macd(bars.close, p["fast"], p["slow"], p["signal"])
    above_zero = np.greater(line, 0.0, where=~np.isnan(line), out=np.zeros(len(line), bool))
    return Signals(ci.crossed_above(line, sig) & above_zero, ci.crossed_below(line, sig))


def _rsi(bars: Any, p: Mapping[str, Any]) -> Signals:
    r = ci.rsi(bars.close, p["period"])
    return Signals(ci.crossed_above(r, p["lower"]), ci.crossed_above(r, p["upper"]))


def _bollinger(bars: Any, p: Mapping[str, Any]) -> Signals:
    upper, middle, _ = ci.bbands(bars.close, p["period"], p["nbdev"], p["nbdev"])
    return Signals(ci.crossed_above(bars.close, upper), ci.crossed_below(bars.close, middle))


def _ema(bars: Any, p: Mapping[str, Any]) -> Signals:
    fast, slow = ci.ema(bars.close, p["fast"]), ci.ema(bars.close, p["slow"])
    up, down = ci.crossed_above(fast, slow), ci.crossed_below(fast, slow)
    return Signals(up, down, down, up) if p["short"] else Signals(up, down)


def _atr(bars: Any, p: Mapping[str, Any]) -> Signals:
    close = bars.close
    trend = ci.ema(close, p["ema_period"])
    dist = ci.atr(bars.high, bars.low, close, p["atr_period"]) / close
    stop = float(p["atr_mult"]) * dist
    tp = float(p["tp_mult"]) * dist if p["tp_mult"] > 0 else None
    return Signals(
        ci.crossed_above(close, trend) & ~np.isnan(dist),
        ci.crossed_below(close, trend),
        stop_loss=None if p["trail"] else stop,
        take_profit=tp,
        trailing_stop=stop if p["trail"] else None,
    )


FORMS: dict[str, tuple[Callable[[Any, Mapping[str, Any]], Signals], list[dict[str, Any]]]] = {
    "macd_trend": (
        _macd,
        [{"fast": f, "slow": s, "signal": g} for f, s in ((3, 7), (12, 26)) for g in (2, 9, 30)],
    ),
    "rsi_reversion": (
        _rsi,
        [{"period": p, "lower": lo, "upper": 70.0} for p in (2, 14) for lo in (25.0, 30.0)],
    ),
    "bollinger_breakout": (
        _bollinger,
        [{"period": p, "nbdev": d} for p in (2, 5, 20, 200) for d in (0.5, 1.0, 2.0, 2.7, 5.0)],
    ),
    "ema_cross": (
        _ema,
        [{"fast": 5, "slow": 20, "short": s} for s in (False, True)],
    ),
    "atr_stops": (
        _atr,
        [
            {"ema_period": e, "atr_period": 14, "atr_mult": m, "tp_mult": tp, "trail": t}
            for e in (10, 50)
            for m in (1.5, 3.0)
            for tp, t in ((0.0, True), (4.0, False))
        ],
    ),
}


def _equal(a: Signals, b: Signals) -> bool:
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return False
        if x is not None and not np.array_equal(x, y, equal_nan=True):
            return False
    return True


@pytest.mark.parametrize("name", list(FORMS))
def test_signals_equal_the_plain_formula(name: str, candles: Any) -> None:
    form, grid = FORMS[name]
    strat = get_strategy(name)
    for raw in (random_bars(1500, seed=11), candles):
        bars = bars_to_arrays(raw)
        params = [strat.validate_params(p) for p in grid]
        for p in params:
            assert _equal(run_signals(strat, bars, p), form(bars, p)), (name, p)
        # inside a batch: pieces computed once, then served read-only to the later trials
        with indicator_cache() as cache:
            trusted = cache.trust_bars(bars)
            for _ in range(3):
                for p in params:
                    assert _equal(run_signals(strat, trusted, p), form(bars, p)), (name, p)
        assert cache.hits > 0
