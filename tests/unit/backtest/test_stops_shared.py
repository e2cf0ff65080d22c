"""The live bots' stop rule is the backtest kernel's: same exits, bar for bar and price for price.

Random markets (gaps at the open included) and random entries with per-bar stop distances are
simulated by the kernel; every trade it records is then replayed bar by bar through
:class:`PositionStops` (what a live bot runs on each candle), which must find the exit on the
same bar, at the same price, for the same reason, and no exit for a trade the kernel left open.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.stops import PositionStops, resolve_stop, stop_exit_nb


def _market(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    # every fourth bar or so opens away from the last close: gaps through the levels
    gap = np.where(rng.random(n) < 0.25, rng.normal(0.0, 0.03, n), 0.0)
    open_ = np.empty(n)
    open_[0] = close[0]
    open_[1:] = close[:-1] * np.exp(gap[1:])
    wick = np.abs(rng.normal(0.0, 0.015, (2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    return open_, high, low, close


def _stops(rng: np.random.Generator, n: int, p_none: float, scale: float) -> np.ndarray | float:
    kind = rng.integers(3)
    if kind == 0:
        return math.nan  # no stop of this kind
    if kind == 1:
        return float(rng.uniform(0.2, 2.0) * scale)  # one value for the run
    arr = rng.uniform(0.2, 2.0, n) * scale  # per-bar, as a strategy's Signals give them
    arr[rng.random(n) < p_none] = np.nan
    return arr


def _at(value: np.ndarray | float, bar: int) -> float:
    return float(value[bar]) if isinstance(value, np.ndarray) else float(value)


def _replay(
    trade: np.ndarray,
    ohlc: tuple[np.ndarray, ...],
    stops: tuple[np.ndarray | float, ...],
    fill_at_close: bool,
) -> tuple[int, float, int]:
    """Replay one kernel trade through PositionStops; return (exit bar, exit price, reason)."""
    open_, high, low, _ = ohlc
    entry_bar = int(trade[nb.T_ENTRY_BAR])
    signal_bar = entry_bar if fill_at_close else entry_bar - 1
    sl, tp, tsl = (_at(s, signal_bar) for s in stops)
    pos = PositionStops(float(trade[nb.T_ENTRY_PRICE]), entry_bar, sl, tp, tsl)
    first = entry_bar + 1 if fill_at_close else entry_bar
    for i in range(first, len(open_)):
        reason, base = pos.check(i, open_[i], high[i], low[i])
        if reason >= 0:
            return i, base, reason
        pos.close_bar(i, high[i], low[i])
    return -1, math.nan, -1


@pytest.mark.parametrize("fill", ["next_open", "close"])
@pytest.mark.parametrize("seed", range(10))
def test_live_stop_rule_exits_where_the_kernel_does(seed: int, fill: str) -> None:
    rng = np.random.default_rng(seed)
    checked = gapped = 0
    for _ in range(40):
        n = int(rng.integers(50, 400))
        ohlc = _market(rng, n)
        entries = rng.random(n) < 0.08
        exits = rng.random(n) < 0.01  # a few signal exits: those trades are not replayed
        stops = (
            _stops(rng, n, 0.2, 0.05),
            _stops(rng, n, 0.2, 0.08),
            _stops(rng, n, 0.2, 0.04),
        )
        open_, high, low, close = ohlc
        out = simulate(
            open_,
            high,
            low,
            close,
            entries,
            exits,
            config=SimConfig(fee_bps=10, fill=fill, allow_short=False),  # type: ignore[arg-type]
            stop_loss=None if isinstance(stops[0], float) and math.isnan(stops[0]) else stops[0],
            take_profit=None if isinstance(stops[1], float) and math.isnan(stops[1]) else stops[1],
            trailing_stop=None
            if isinstance(stops[2], float) and math.isnan(stops[2])
            else stops[2],
        )
        for trade in out.trades:
            reason = int(trade[nb.T_EXIT_REASON])
            exit_bar, price, why = _replay(trade, ohlc, stops, fill == "close")
            if reason == nb.REASON_SIGNAL:
                # the live rule may not have fired before the kernel's signal exit
                assert exit_bar < 0 or exit_bar >= int(trade[nb.T_EXIT_BAR])
                continue
            if trade[nb.T_OPEN]:
                assert exit_bar < 0, "the kernel left this trade open"
                continue
            checked += 1
            assert (exit_bar, why) == (int(trade[nb.T_EXIT_BAR]), reason)
            assert price == trade[nb.T_EXIT_PRICE]  # slippage 0, no tick: the base itself
            gapped += price == ohlc[0][exit_bar]
    assert checked > 50, "the scenarios must stop out many trades"
    assert gapped > 0, "the scenarios must include gaps through a level"


def test_stop_rule_details() -> None:
    """Tighter of stop-loss and trailing; gap at the open; none on the entry bar's open."""
    # long from 100, extreme 120: stop-loss 90, trailing (10%) 108 -> the trailing stop rules
    reason, base, ext = stop_exit_nb(1.0, 115.0, 119.0, 107.0, 100.0, 120.0, 0.1, np.nan, 0.1, True)
    assert (reason, base, ext) == (nb.REASON_TRAILING_STOP, 108.0, 120.0)
    # a gap through it exits at the open
    reason, base, _ = stop_exit_nb(1.0, 105.0, 106.0, 101.0, 100.0, 120.0, 0.1, np.nan, 0.1, True)
    assert (reason, base) == (nb.REASON_TRAILING_STOP, 105.0)
    # on the entry bar there is no gap: the level itself
    reason, base, _ = stop_exit_nb(1.0, 105.0, 106.0, 101.0, 100.0, 120.0, 0.1, np.nan, 0.1, False)
    assert (reason, base) == (nb.REASON_TRAILING_STOP, 108.0)
    # stop and target inside one bar: the stop wins
    reason, _, _ = stop_exit_nb(1.0, 100.0, 130.0, 80.0, 100.0, 100.0, 0.1, 0.2, np.nan, True)
    assert reason == nb.REASON_STOP_LOSS
    # the extreme takes the bar's high only after the check
    pos = PositionStops(100.0, 5, tsl=0.1)
    assert pos.check(6, 100.0, 130.0, 116.0) == (-1, 0.0)  # 130 * 0.9 = 117 is not yet a stop
    pos.close_bar(6, 130.0, 116.0)
    assert pos.check(7, 118.0, 119.0, 116.0) == (nb.REASON_TRAILING_STOP, 117.0)
    pos.close_bar(4, 500.0, 1.0)  # before the entry: ignored
    assert pos.extreme == 130.0
    assert not PositionStops(100.0, 5).armed


def test_resolve_stop_precedence() -> None:
    """The bot's setting, else the signal bar's value (or class default), else none."""
    assert resolve_stop(0.02, 0.05) == 0.02
    assert resolve_stop(None, 0.05) == 0.05
    assert math.isnan(resolve_stop(None, None))
    assert math.isnan(resolve_stop(None, math.nan))
