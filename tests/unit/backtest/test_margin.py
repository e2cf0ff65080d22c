"""Margin and liquidation: the gross-exposure cap at entries and the liquidation of the account.

Expected values are worked by hand (docs/backtest.md, "Margin and liquidation", walks through
the same numbers); fees and slippage are zero unless a test says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.backtest.result import _REASONS
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.risk import margin


def _cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = {"init_cash": 1000.0, "fee_bps": 0.0, "fill": "close"}
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def _flat(n: int, k: int, price: float = 100.0) -> np.ndarray:
    return np.full((n, k), price)


def _book(
    orders: np.ndarray, n: int, k: int, init_cash: float
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Rebuild cash and positions after each bar from the order records; list entry bars."""
    cash = np.full(n, init_cash)
    pos = np.zeros((n, k))
    now = np.zeros(k)
    entries = []
    for bar, col, side, qty, px, fee, _ in orders:
        b, j = int(bar), int(col)
        cash[b:] -= side * qty * px + fee
        pos[b:, j] += side * qty
        if abs(now[j] + side * qty) > abs(now[j]):
            entries.append(b)
        now[j] += side * qty
    return cash, pos, entries


def test_defaults_are_the_shared_rule() -> None:
    cfg = SimConfig()
    assert cfg.max_gross_leverage == margin.MAX_GROSS_LEVERAGE == nb.MAX_GROSS_LEVERAGE == 1.0
    assert cfg.maintenance_margin == margin.MAINTENANCE_MARGIN == nb.MAINTENANCE_MARGIN
    assert cfg.liquidation is True
    assert _REASONS[nb.REASON_LIQUIDATION] == "liquidation"


def test_short_proceeds_do_not_fund_more_shorts_at_default_sizing() -> None:
    # Five symbols, shared cash, a short signal on each at 100.  Before the cap the first short
    # put 1000 of proceeds in cash (cash 2000, equity 1000) and each further one was sized at
    # equity again: 5 shorts, gross 5000 on equity 1000.  Now the room is
    # cash + 2 x short value = 2000 - 2000 = 0 after the first.
    k = 5
    c = _flat(3, k)
    se = np.zeros((3, k), bool)
    se[0] = True
    out = simulate(c, c, c, c, None, None, se, None, config=_cfg())
    assert out.orders[:, nb.O_COL].tolist() == [0.0]
    assert out.orders[0, nb.O_QTY] == 10.0
    assert out.stats[nb.S_SKIPPED_MARGIN] == 4
    assert out.equity.tolist() == [1000.0, 1000.0, 1000.0]
    # the former behaviour, for contrast: a cap far away and no liquidation
    old = simulate(
        c, c, c, c, None, None, se, None, config=_cfg(max_gross_leverage=125.0, liquidation=False)
    )
    assert old.orders[:, nb.O_QTY].sum() * 100.0 / old.equity[0] == pytest.approx(5.0)


def test_partial_sizes_fill_the_room_exactly() -> None:
    # size 0.25: shorts of 250 each; room before each: 1000, 750, 500, 250, 0
    k = 5
    c = _flat(2, k)
    se = np.zeros((2, k), bool)
    se[0] = True
    out = simulate(c, c, c, c, None, None, se, None, config=_cfg(size=0.25))
    assert out.orders[:, nb.O_QTY].tolist() == [2.5, 2.5, 2.5, 2.5]
    assert out.stats[nb.S_SKIPPED_MARGIN] == 1
    # a long after a short: a 750 short leaves room 1750 - 2 x 750 = 250 (not the 1750 of
    # cash), so the long, sized at 750 of equity 1000, is cut to 250
    le = np.zeros((2, 2), bool)
    se2 = np.zeros((2, 2), bool)
    se2[0, 0] = True
    le[0, 1] = True
    c2 = _flat(2, 2)
    mixed = simulate(c2, c2, c2, c2, le, None, se2, None, config=_cfg(size=0.75))
    assert mixed.orders[:, nb.O_SIDE].tolist() == [-1.0, 1.0]
    assert mixed.orders[:, nb.O_QTY].tolist() == [7.5, 2.5]
    assert mixed.equity[-1] == 1000.0


def test_fee_is_kept_inside_the_cap() -> None:
    # 10 bps, size 0.6: the first short is 600 / 1.001 of notional; the second, sized at 0.6
    # of equity, is cut to the room, 400 with its fee, so that gross == equity after the fee
    c = _flat(2, 2)
    se = np.zeros((2, 2), bool)
    se[0] = True
    out = simulate(c, c, c, c, None, None, se, None, config=_cfg(fee_bps=10.0, size=0.6))
    assert out.orders[1, nb.O_QTY] * 100.0 + out.orders[1, nb.O_FEE] == pytest.approx(400.0)
    cash, pos, _ = _book(out.orders, 2, 2, 1000.0)
    gross = np.abs(pos[0]).sum() * 100.0
    equity = cash[0] + pos[0].sum() * 100.0
    assert gross == pytest.approx(equity, rel=1e-12)
    assert out.equity[0] == pytest.approx(equity, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_random_multi_symbol_shorts_never_exceed_the_cap(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 600, 6
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, k)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]])  # no gaps
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    sig = [rng.random((n, k)) < 0.05 for _ in range(4)]
    out = simulate(open_, high, low, close, *sig, config=SimConfig(fill="close", init_cash=1e4))
    cash, pos, entries = _book(out.orders, n, k, 1e4)
    gross = (np.abs(pos) * close).sum(axis=1)
    equity = cash + (pos * close).sum(axis=1)
    np.testing.assert_allclose(equity, out.equity, rtol=1e-9)
    # close fills: after a bar's entries, at its close, gross is within the cap
    assert len(entries) > 20
    assert (gross[entries] / equity[entries]).max() <= 1.0 + 1e-9
    assert out.stats[nb.S_SKIPPED_MARGIN] > 0
    # the same signals without the cap reach several times equity
    old = simulate(
        open_,
        high,
        low,
        close,
        *sig,
        config=SimConfig(fill="close", init_cash=1e4, max_gross_leverage=125, liquidation=False),
    )
    cash_o, pos_o, _ = _book(old.orders, n, k, 1e4)
    lev_o = (np.abs(pos_o) * close).sum(axis=1) / (cash_o + (pos_o * close).sum(axis=1))
    assert lev_o.max() > 2.5


def _squeeze(
    o2: float, h2: float, **kw: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # a short of 10 at 100 (bar 0 close); bar 1 drifts to 150; bar 2 opens at o2, spikes to h2
    o = np.array([100.0, 150.0, o2, 240.0, 240.0])
    h = np.array([100.0, 150.0, h2, 240.0, 240.0])
    lo = np.array([100.0, 150.0, o2, 240.0, 240.0])
    c = np.array([100.0, 150.0, 240.0, 240.0, 240.0])
    return o, h, lo, c


def test_short_squeeze_liquidates_at_the_margin_price() -> None:
    # cash 2000 after the short; called when 2000 - 10 P = 0.005 x 10 P, P* = 2000 / 10.05
    o, h, lo, c = _squeeze(160.0, 250.0)
    se = np.array([True, False, False, True, False])  # the later signal is ignored
    out = simulate(o, h, lo, c, None, None, se, None, config=_cfg())
    p_star = 2000.0 / 10.05
    assert p_star == pytest.approx(margin.liquidation_price(2000.0, -10.0, 0.0, 0.0, 0.005))
    assert out.orders[:, nb.O_BAR].tolist() == [0, 2]
    assert out.orders[1, nb.O_REASON] == nb.REASON_LIQUIDATION
    assert out.orders[1, nb.O_PRICE] == pytest.approx(p_star, rel=1e-12)
    assert out.trades[0, nb.T_EXIT_REASON] == nb.REASON_LIQUIDATION
    left = 0.005 * 10 * p_star  # the maintenance requirement, 9.9502...
    assert out.equity.tolist() == pytest.approx([1000.0, 500.0, left, left, left], rel=1e-12)
    assert out.stats[nb.S_LIQUIDATED] == 1.0
    assert out.stats[nb.S_LIQUIDATION_BAR] == 2
    m = metrics_from_stats(out.stats, 1000.0, 365.0)
    assert (m["liquidated"], m["liquidation_bar"]) == (1.0, 2.0)
    assert np.isnan(metrics_from_stats(np.zeros(nb.N_STATS), 1.0, 1.0)["liquidation_bar"])


def test_liquidation_with_fees_leaves_exactly_the_requirement() -> None:
    o, h, lo, c = _squeeze(160.0, 250.0)
    se = np.array([True, False, False, False, False])
    out = simulate(o, h, lo, c, None, None, se, None, config=_cfg(fee_bps=10.0, slippage_bps=5.0))
    qty = out.orders[0, nb.O_QTY]
    cash = 1000.0 + qty * out.orders[0, nb.O_PRICE] - out.orders[0, nb.O_FEE]
    p_star = margin.liquidation_price(cash, -qty, 0.001, 0.0005, 0.005)
    assert out.orders[1, nb.O_PRICE] == pytest.approx(p_star * 1.0005, rel=1e-12)
    assert out.equity[-1] == pytest.approx(0.005 * qty * p_star, rel=1e-9)
    assert out.equity.min() >= 0.0


def test_gap_through_the_margin_price_fills_at_the_open_and_may_go_negative() -> None:
    o, h, lo, c = _squeeze(300.0, 310.0)
    se = np.array([True, False, False, False, False])
    out = simulate(o, h, lo, c, None, None, se, None, config=_cfg())
    assert out.orders[1, nb.O_PRICE] == 300.0
    assert out.equity[2:].tolist() == [-1000.0] * 3
    assert out.stats[nb.S_LIQUIDATION_BAR] == 2
    # without liquidation the short stays open and equity follows the price down
    off = simulate(o, h, lo, c, None, None, se, None, config=_cfg(liquidation=False))
    assert len(off.orders) == 1
    assert off.equity[-1] == 2000.0 - 2400.0
    assert off.stats[nb.S_LIQUIDATED] == 0.0


def test_two_symbols_move_together_to_the_margin_point() -> None:
    # shorts of 5 in A and B at 100 (room: 1000, then 500); bar 1: A opens 100 and spikes to
    # 300, B stays at 100.  d(open) = 1000 - 0.005 x 1000 = 995, d(worst) = 0 - 0.005 x 2000
    # = -10, lambda = 995 / 1005, A closes at 100 + 200 lambda = 299500 / 1005.
    c = np.array([[100.0, 100.0], [300.0, 100.0], [300.0, 100.0]])
    o = np.array([[100.0, 100.0], [100.0, 100.0], [300.0, 100.0]])
    h = np.maximum(o, c)
    se = np.zeros((3, 2), bool)
    se[0] = True
    out = simulate(o, h, o, c, None, None, se, None, config=_cfg(size=0.5))
    assert out.orders[:, nb.O_QTY].tolist() == [5.0, 5.0, 5.0, 5.0]
    assert out.orders[2:, nb.O_REASON].tolist() == [nb.REASON_LIQUIDATION] * 2
    assert out.orders[2, nb.O_PRICE] == pytest.approx(299500.0 / 1005.0, rel=1e-12)
    assert out.orders[3, nb.O_PRICE] == 100.0
    assert out.equity[1:].tolist() == pytest.approx([10000.0 / 1005.0] * 2, rel=1e-12)


def test_levered_long_is_liquidated_and_unlevered_long_never_is() -> None:
    # leverage 2: a long of 20 at 100 borrows 1000 (cash -1000); called when
    # -1000 + 20 P = 0.005 x 20 P, P* = 1000 / 19.9
    c = np.array([100.0, 80.0, 60.0, 60.0])
    lo = np.array([100.0, 80.0, 40.0, 60.0])
    o = np.array([100.0, 100.0, 80.0, 60.0])
    le = np.array([True, False, False, False])
    lev = _cfg(max_gross_leverage=2.0, size=2.0, max_position=2.0)
    out = simulate(o, np.maximum(o, c), lo, c, le, None, config=lev)
    assert out.orders[0, nb.O_QTY] == 20.0
    assert out.orders[1, nb.O_PRICE] == pytest.approx(1000.0 / 19.9, rel=1e-12)
    assert out.orders[1, nb.O_PRICE] == pytest.approx(
        margin.liquidation_price(-1000.0, 20.0, 0.0, 0.0, 0.005)
    )
    assert out.stats[nb.S_LIQUIDATION_BAR] == 2
    assert out.equity[-1] == pytest.approx(0.005 * 20 * 1000.0 / 19.9, rel=1e-12)
    crash = np.array([100.0, 1.0, 0.01, 0.01])
    plain = simulate(crash, crash, crash, crash, le, None, config=_cfg())
    assert plain.stats[nb.S_LIQUIDATED] == 0.0
    assert plain.equity[-1] == pytest.approx(0.1)


@pytest.mark.parametrize("seed", range(4))
def test_both_kernels_agree_when_liquidating(seed: int, call_kernel: Callable[..., Any]) -> None:
    rng = np.random.default_rng(50 + seed)
    n = 2000
    close = 100 * np.exp(np.cumsum(rng.normal(0.002, 0.03, n)))  # drifting up: shorts suffer
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.02, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.02, n)))
    prices = [a.reshape(-1, 1) for a in (open_, high, low, close)]
    short_only = np.zeros((n, 1), bool)
    sig = [short_only, short_only, (rng.random(n) < 0.01).reshape(-1, 1), short_only]
    nan = np.full((1, 1), np.nan)
    args = (
        *prices,
        *sig,
        nan,
        nan,
        nan,
        np.zeros(1),
        np.zeros(1),
        np.zeros(1),
        np.zeros(1),
        10_000.0,
        0.001,
        0.0005,
        bool(seed % 2),
        0,
        3.0,
        3.0,
        1,
        False,
        False,
    )
    eq1, eq2 = np.empty(n), np.empty(n)
    margin_args = (3.0, 0.01, True)
    o1, t1, s1 = call_kernel(nb.simulate_1d_nb, *args, eq1, margin=margin_args)
    o2, t2, s2 = call_kernel(nb.simulate_nb, *args, eq2, margin=margin_args)
    assert s1[nb.S_LIQUIDATED] == 1.0
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(eq1, eq2)
    bar = int(s1[nb.S_LIQUIDATION_BAR])
    assert o1[-1, nb.O_REASON] == nb.REASON_LIQUIDATION
    assert o1[-1, nb.O_BAR] == bar
    assert np.all(eq1[bar:] == eq1[bar])  # stopped trading


def test_config_validation_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="max_gross_leverage"):
        SimConfig(max_gross_leverage=0.0)
    with pytest.raises(InvalidInputError, match="maintenance_margin"):
        SimConfig(maintenance_margin=1.0)
    with pytest.raises(InvalidInputError, match="size"):
        SimConfig(size=1.5)
    assert SimConfig(size=1.5, max_gross_leverage=2.0).size == 1.5


def test_pure_rule_in_floats_and_decimals() -> None:
    assert margin.entry_room(1000.0, 1000.0, 1.0) == 0.0
    assert margin.entry_room(1000.0, 250.0, 1.0) == 750.0
    assert margin.entry_room(Decimal(1000), Decimal(1200), Decimal(1)) == Decimal(0)
    assert margin.entry_room(1000.0, 0.0, 1.0, fee=0.001) == pytest.approx(1000.0 / 1.001)
    assert margin.within_gross_cap(Decimal(1000), Decimal(1000), Decimal(1))
    assert not margin.within_gross_cap(Decimal(1000), Decimal("1000.01"), Decimal(1))
    assert margin.liquidation_value(2000.0, [-10.0, 0.0], [200.0, 50.0], 0.0, 0.0) == 0.0
    assert margin.margin_call(0.0, 2000.0, 0.005)
    assert not margin.margin_call(2000.0 - 1990.0, 1990.0, 0.005)  # 10 > 9.95
    assert margin.liquidation_price(1000.0, 10.0, 0.0, 0.0, 0.005) == 0.0  # paid in cash
    with pytest.raises(InvalidInputError, match="qty"):
        margin.liquidation_price(1000.0, 0.0, 0.0, 0.0, 0.005)
