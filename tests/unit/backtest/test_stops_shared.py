"""The live bots' stop rule is the backtest kernel's: same exits, bar for bar and price for price.

Random markets (gaps at the open included) and random entries with per-bar stop distances are
simulated by the kernel; every trade it records is then replayed bar by bar through
:class:`PositionStops` (what a live bot runs on each candle), which must find the exit on the
same bar, at the same price, for the same reason, and no exit for a trade the kernel left open.
Odd seeds trade longs and shorts on prices with a 0.01 tick, where the levels are on the tick.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.stops import (
    PositionStops,
    resolve_stop,
    round_to_tick_nb,
    stop_exit_nb,
    tick_decimal,
)


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
    tick: float = 0.0,
) -> tuple[int, float, int]:
    """Replay one kernel trade through PositionStops; return (exit bar, exit price, reason)."""
    open_, high, low, _ = ohlc
    entry_bar = int(trade[nb.T_ENTRY_BAR])
    signal_bar = entry_bar if fill_at_close else entry_bar - 1
    sl, tp, tsl = (_at(s, signal_bar) for s in stops)
    side = float(trade[nb.T_DIR])
    pos = PositionStops(float(trade[nb.T_ENTRY_PRICE]), entry_bar, sl, tp, tsl, tick=tick)
    first = entry_bar + 1 if fill_at_close else entry_bar
    for i in range(first, len(open_)):
        reason, base = pos.check(i, open_[i], high[i], low[i], side=side)
        if reason >= 0:
            return i, base, reason
        pos.close_bar(i, high[i], low[i], side=side)
    return -1, math.nan, -1


@pytest.mark.parametrize("fill", ["next_open", "close"])
@pytest.mark.parametrize("seed", range(10))
def test_live_stop_rule_exits_where_the_kernel_does(seed: int, fill: str) -> None:
    rng = np.random.default_rng(seed)
    tick = 0.01 if seed % 2 else 0.0
    checked = gapped = shorts = 0
    for _ in range(40):
        n = int(rng.integers(50, 400))
        ohlc = _market(rng, n)
        if tick:
            ohlc = tuple(np.round(a, 2) for a in ohlc)
        entries = rng.random(n) < 0.08
        exits = rng.random(n) < 0.01  # a few signal exits: those trades are not replayed
        short_entries = (rng.random(n) < 0.08) if tick else None
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
            short_entries,
            config=SimConfig(
                fee_bps=10,
                fill=fill,  # type: ignore[arg-type]
                allow_short=bool(tick),
                price_tick=tick,
            ),
            stop_loss=None if isinstance(stops[0], float) and math.isnan(stops[0]) else stops[0],
            take_profit=None if isinstance(stops[1], float) and math.isnan(stops[1]) else stops[1],
            trailing_stop=None
            if isinstance(stops[2], float) and math.isnan(stops[2])
            else stops[2],
        )
        for trade in out.trades:
            reason = int(trade[nb.T_EXIT_REASON])
            exit_bar, price, why = _replay(trade, ohlc, stops, fill == "close", tick)
            if reason == nb.REASON_SIGNAL:
                # the live rule may not have fired before the kernel's signal exit
                assert exit_bar < 0 or exit_bar >= int(trade[nb.T_EXIT_BAR])
                continue
            if trade[nb.T_OPEN]:
                assert exit_bar < 0, "the kernel left this trade open"
                continue
            checked += 1
            assert (exit_bar, why) == (int(trade[nb.T_EXIT_BAR]), reason)
            assert price == trade[nb.T_EXIT_PRICE]  # slippage 0: the base itself
            if tick:  # on the tick, as the exchange's decimal of it
                assert float(tick_decimal(price, Decimal("0.01"))) == price
            gapped += price == ohlc[0][exit_bar]
            shorts += trade[nb.T_DIR] < 0
    assert checked > 50, "the scenarios must stop out many trades"
    assert gapped > 0, "the scenarios must include gaps through a level"
    assert shorts > 0 or not tick, "the ticked scenarios must stop out shorts"


def test_stop_rule_details() -> None:
    """Tighter of stop-loss and trailing; gap at the open; none on the entry bar's open."""
    # long from 100, extreme 120: stop-loss 90, trailing (10%) 108 -> the trailing stop rules
    reason, base, ext = stop_exit_nb(
        1.0, 115.0, 119.0, 107.0, 100.0, 120.0, 0.1, np.nan, 0.1, True, 0.0
    )
    assert (reason, base, ext) == (nb.REASON_TRAILING_STOP, 108.0, 120.0)
    # a gap through it exits at the open
    reason, base, _ = stop_exit_nb(
        1.0, 105.0, 106.0, 101.0, 100.0, 120.0, 0.1, np.nan, 0.1, True, 0.0
    )
    assert (reason, base) == (nb.REASON_TRAILING_STOP, 105.0)
    # on the entry bar there is no gap: the level itself
    reason, base, _ = stop_exit_nb(
        1.0, 105.0, 106.0, 101.0, 100.0, 120.0, 0.1, np.nan, 0.1, False, 0.0
    )
    assert (reason, base) == (nb.REASON_TRAILING_STOP, 108.0)
    # stop and target inside one bar: the stop wins
    reason, _, _ = stop_exit_nb(1.0, 100.0, 130.0, 80.0, 100.0, 100.0, 0.1, 0.2, np.nan, True, 0.0)
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


def _decimal_oracle(price: float, tick: str, up: bool) -> float:
    """The tick level at or above (below) ``price``, in exact decimals: the float's shortest
    decimal (a float equal to a tick level's is on the tick) rounded onto the tick."""
    step = Decimal(tick)
    units = (Decimal(repr(float(price))) / step).to_integral_value(
        rounding=ROUND_CEILING if up else ROUND_FLOOR
    )
    return float(units * step)


@pytest.mark.parametrize("tick", ["0.01", "0.1", "0.5", "0.00001", "1", "25"])
def test_round_to_tick_is_exact(tick: str) -> None:
    """The kernel's rounding is the exact decimal one: prices on the tick stay, others go to the
    float of the decimal tick level (a float product such as 19600 x 0.98 included)."""
    rng = np.random.default_rng(7)
    step = float(tick)
    decimals = max(0, -Decimal(tick).as_tuple().exponent)  # type: ignore[operator]
    on_tick = np.round(rng.uniform(1, 5e4, 300) / step) * step
    on_tick = np.round(on_tick, decimals)
    off_tick = np.concatenate(
        [rng.uniform(1, 5e4, 300), on_tick * (1 - 0.02), on_tick * (1 + 0.03), on_tick * 0.98]
    )
    for p in on_tick:
        assert round_to_tick_nb(p, step, True) == p == round_to_tick_nb(p, step, False)
    for p in off_tick:
        for up in (True, False):
            got = round_to_tick_nb(p, step, up)
            assert got == _decimal_oracle(p, tick, up), (p, up)
            assert (got >= p) if up else (got <= p)
            assert tick_decimal(got, Decimal(tick)) == Decimal(repr(float(got))).quantize(
                Decimal(tick)
            )
    assert round_to_tick_nb(123.456, 0.0, True) == 123.456


def test_ticked_levels_never_better_than_asked() -> None:
    """On a tick, a long's stop is below its level and its target above; a short's mirrored."""
    # long from 100.03 with a 2 % stop (98.0294) and a 3 % target (103.0309)
    pos = PositionStops(100.03, 0, sl=0.02, tp=0.03, tick=0.01)
    assert pos.stop_level() == (nb.REASON_STOP_LOSS, 98.02)
    assert pos.target_level() == 103.04
    assert pos.check(1, 100.0, 103.04, 99.0) == (nb.REASON_TAKE_PROFIT, 103.04)
    assert pos.check(1, 100.0, 103.03, 98.03) == (-1, 0.0)
    assert pos.check(1, 100.0, 101.0, 98.02) == (nb.REASON_STOP_LOSS, 98.02)
    # the same short: stop 102.0306 -> 102.04, target 97.0291 -> 97.02
    pos = PositionStops(100.03, 0, sl=0.02, tp=0.03, tick=0.01)
    assert pos.stop_level(side=-1.0) == (nb.REASON_STOP_LOSS, 102.04)
    assert pos.target_level(side=-1.0) == 97.02
    assert pos.check(1, 100.0, 102.04, 99.0, side=-1.0) == (nb.REASON_STOP_LOSS, 102.04)
    assert pos.check(1, 100.0, 102.03, 97.03, side=-1.0) == (-1, 0.0)
    assert pos.check(1, 100.0, 101.0, 97.02, side=-1.0) == (nb.REASON_TAKE_PROFIT, 97.02)
