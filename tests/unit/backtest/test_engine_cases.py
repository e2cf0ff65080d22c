"""Hand-worked small cases: fills, every stop type, shorts, sizing modes, precision, shared cash."""

from __future__ import annotations

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.errors import InvalidInputError

T, F = True, False


def _run(o, h, l, c, le, lx=None, se=None, sx=None, **cfg):  # noqa: ANN001, ANN003, ANN202, E741
    arr = [np.asarray(x, dtype=float) for x in (o, h, l, c)]
    b = [None if x is None else np.asarray(x, dtype=bool) for x in (le, lx, se, sx)]
    # The hand-worked figures assume no fee unless a case sets one (the default is the taker's).
    return simulate(*arr, *b, config=SimConfig(init_cash=1000.0, **{"fee_bps": 0.0, **cfg}))


def test_next_open_fill_is_default_and_last_bar_signal_is_not_filled() -> None:
    out = _run(
        [10, 11, 12, 13],
        [10, 11, 12, 13],
        [10, 11, 12, 13],
        [10.5, 11.5, 12.5, 13.5],
        [T, F, F, F],
        [F, F, T, T],
    )
    assert out.orders[:, nb.O_BAR].tolist() == [1, 3]
    assert out.orders[:, nb.O_PRICE].tolist() == [11.0, 13.0]
    qty = 1000.0 / 11.0
    assert out.orders[0, nb.O_QTY] == pytest.approx(qty)
    assert out.stats[nb.S_FINAL_EQUITY] == pytest.approx(qty * 13.0)
    # equity at bar 1's close: all cash is in the position
    assert out.equity[1] == pytest.approx(qty * 11.5)


def test_close_fill_and_fees_on_both_fills() -> None:
    out = _run(
        [1, 1, 1],
        [1, 1, 1],
        [1, 1, 1],
        [100, 110, 120],
        [T, F, F],
        [F, T, F],
        fill="close",
        fee_bps=100,
    )
    qty = 1000.0 / 1.01 / 100
    assert out.orders[0, nb.O_QTY] == pytest.approx(qty)
    sell_fee = qty * 110 * 0.01
    assert out.orders[1, nb.O_FEE] == pytest.approx(sell_fee)
    assert out.stats[nb.S_FINAL_EQUITY] == pytest.approx(qty * 110 - sell_fee)
    assert out.stats[nb.S_FEES] == pytest.approx(1000 - 1000 / 1.01 + sell_fee)


def test_stop_loss_triggers_intrabar_at_stop_price() -> None:
    # entry at bar 1 open 100; stop 5% -> 95; bar 2 low 94 -> exit at 95
    out = _run(
        [100, 100, 99, 98],
        [101, 101, 100, 99],
        [99, 98, 94, 97],
        [100, 99, 96, 98],
        [T, F, F, F],
        stop_loss=0.05,
    )
    assert out.orders[-1, nb.O_REASON] == nb.REASON_STOP_LOSS
    assert out.orders[-1, nb.O_BAR] == 2
    assert out.orders[-1, nb.O_PRICE] == pytest.approx(95.0)


def test_stop_loss_in_the_entry_bar_when_filled_at_open() -> None:
    out = _run(
        [100, 100, 99], [101, 101, 100], [99, 90, 97], [100, 99, 98], [T, F, F], stop_loss=0.05
    )
    assert out.orders[-1, nb.O_BAR] == 1
    assert out.orders[-1, nb.O_PRICE] == pytest.approx(95.0)


def test_gap_through_stop_fills_at_open() -> None:
    out = _run(
        [100, 100, 90, 91],
        [101, 101, 92, 92],
        [99, 99, 89, 90],
        [100, 100, 91, 91],
        [T, F, F, F],
        stop_loss=0.05,
    )
    assert out.orders[-1, nb.O_REASON] == nb.REASON_STOP_LOSS
    assert out.orders[-1, nb.O_PRICE] == pytest.approx(90.0)


def test_take_profit_and_gap_above_take_profit() -> None:
    out = _run(
        [100, 100, 104, 100],
        [101, 101, 111, 101],
        [99, 99, 103, 99],
        [100, 100, 105, 100],
        [T, F, F, F],
        take_profit=0.10,
    )
    assert out.orders[-1, nb.O_REASON] == nb.REASON_TAKE_PROFIT
    assert out.orders[-1, nb.O_PRICE] == pytest.approx(110.0)
    gap = _run(
        [100, 100, 115, 100],
        [101, 101, 116, 101],
        [99, 99, 114, 99],
        [100, 100, 115, 100],
        [T, F, F, F],
        take_profit=0.10,
    )
    assert gap.orders[-1, nb.O_PRICE] == pytest.approx(115.0)


def test_stop_wins_when_both_could_trigger_in_one_bar() -> None:
    out = _run(
        [100, 100, 100],
        [101, 101, 120],
        [99, 99, 80],
        [100, 100, 100],
        [T, F, F],
        stop_loss=0.05,
        take_profit=0.10,
    )
    assert out.orders[-1, nb.O_REASON] == nb.REASON_STOP_LOSS
    assert out.orders[-1, nb.O_PRICE] == pytest.approx(95.0)


def test_trailing_stop_follows_the_high_of_earlier_bars() -> None:
    # entry 100 at bar 1; highs 100 -> 120 (bar 2); bar 3 low 107 < 120*0.9=108 -> exit 108
    out = _run(
        [100, 100, 110, 115, 100],
        [100, 100, 120, 116, 101],
        [100, 99, 109, 107, 99],
        [100, 100, 115, 110, 100],
        [T, F, F, F, F],
        trailing_stop=0.10,
    )
    assert out.orders[-1, nb.O_REASON] == nb.REASON_TRAILING_STOP
    assert out.orders[-1, nb.O_BAR] == 3
    assert out.orders[-1, nb.O_PRICE] == pytest.approx(108.0)


def test_short_selling_profit_and_short_stop() -> None:
    out = _run(
        [100, 100, 90, 80],
        [100, 100, 90, 80],
        [100, 100, 90, 80],
        [100, 100, 90, 80],
        [F] * 4,
        None,
        [T, F, F, F],
        [F, F, T, F],
    )
    assert out.orders[:, nb.O_SIDE].tolist() == [-1.0, 1.0]
    qty = 1000.0 / 100
    assert out.stats[nb.S_FINAL_EQUITY] == pytest.approx(1000 + qty * (100 - 80))
    assert out.trades[0, nb.T_DIR] == -1
    assert out.trades[0, nb.T_PNL] == pytest.approx(qty * 20)
    stopped = _run(
        [100, 100, 100],
        [100, 100, 110],
        [100, 100, 100],
        [100, 100, 100],
        [F] * 3,
        None,
        [T, F, F],
        None,
        stop_loss=0.05,
    )
    assert stopped.orders[-1, nb.O_PRICE] == pytest.approx(105.0)
    assert stopped.stats[nb.S_FINAL_EQUITY] == pytest.approx(1000 - 10 * 5)


def test_opposite_entry_reverses_and_conflicts_cancel() -> None:
    c = [100, 100, 100, 100, 100]
    out = _run(c, c, c, c, [T, F, F, F, F], [F] * 5, [F, F, T, F, F], [F] * 5, fill="close")
    assert out.orders[:, nb.O_SIDE].tolist() == [1.0, -1.0, -1.0]
    conflict = _run(c, c, c, c, [T, F, F, F, F], [T, F, F, F, F], fill="close")
    assert len(conflict.orders) == 0


def test_sizing_fraction_quote_risk_and_max_position() -> None:
    c = [100.0] * 3
    frac = _run(c, c, c, c, [T, F, F], fill="close", size=0.25)
    assert frac.orders[0, nb.O_QTY] == pytest.approx(2.5)
    quote = _run(c, c, c, c, [T, F, F], fill="close", size_mode="quote", size=300.0)
    assert quote.orders[0, nb.O_QTY] == pytest.approx(3.0)
    # risk 1% of 1000 = 10 with a 5% stop -> notional 200 -> 2 units
    risk = _run(c, c, c, c, [T, F, F], fill="close", size_mode="risk", size=0.01, stop_loss=0.05)
    assert risk.orders[0, nb.O_QTY] == pytest.approx(2.0)
    capped = _run(
        c,
        c,
        c,
        c,
        [T, F, F],
        fill="close",
        size_mode="risk",
        size=0.2,
        stop_loss=0.05,
        max_position=0.5,
    )
    assert capped.orders[0, nb.O_QTY] == pytest.approx(5.0)
    with pytest.raises(InvalidInputError, match="size"):
        SimConfig(size=1.5)


def test_min_notional_skips_and_counts_and_qty_step_floors() -> None:
    c = [100.0] * 3
    small = _run(
        c, c, c, c, [T, F, F], fill="close", size_mode="quote", size=5.0, min_notional=10.0
    )
    assert len(small.orders) == 0
    assert small.stats[nb.S_SKIPPED_SMALL] == 1
    assert small.stats[nb.S_FINAL_EQUITY] == 1000.0
    stepped = _run(c, c, c, c, [T, F, F], fill="close", size_mode="quote", size=333.0, qty_step=0.1)
    assert stepped.orders[0, nb.O_QTY] == pytest.approx(3.3)
    ticked = _run(c, c, c, c, [T, F, F], fill="close", slippage_bps=3, price_tick=0.5)
    assert ticked.orders[0, nb.O_PRICE] == 100.5  # 100.03 rounded up against the buyer


def test_shared_cash_and_max_open_positions() -> None:
    n = 4
    c = np.full((n, 2), 100.0)
    le = np.zeros((n, 2), bool)
    le[0, :] = True
    out = simulate(
        c,
        c,
        c,
        c,
        le,
        None,
        config=SimConfig(
            init_cash=1000.0, fee_bps=0.0, fill="close", size=0.5, max_open_positions=1
        ),
    )
    assert len(out.orders) == 1
    assert out.stats[nb.S_SKIPPED_LIMIT] == 1
    both = simulate(
        c,
        c,
        c,
        c,
        le,
        None,
        config=SimConfig(init_cash=1000.0, fee_bps=0.0, fill="close", size=0.5),
    )
    assert both.orders[:, nb.O_COL].tolist() == [0.0, 1.0]
    assert both.orders[:, nb.O_QTY].tolist() == pytest.approx([5.0, 5.0])


def test_accounting_identity_cash_plus_positions_equals_equity() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * 1.004
    low = np.minimum(open_, close) * 0.996
    sig = [rng.random(n) < 0.03 for _ in range(4)]
    out = simulate(
        open_,
        high,
        low,
        close,
        *sig,
        config=SimConfig(
            fee_bps=10, slippage_bps=2, stop_loss=0.02, take_profit=0.04, init_cash=1000.0
        ),
    )
    cash = np.full(n, 1000.0)
    pos = np.zeros(n)
    for bar, _col, side, qty, px, fee, _r in out.orders:
        b = int(bar)
        cash[b:] -= side * qty * px + fee
        pos[b:] += side * qty
    np.testing.assert_allclose(cash + pos * close, out.equity, rtol=1e-9)
    assert out.stats[nb.S_FEES] == pytest.approx(out.orders[:, nb.O_FEE].sum())
    # with every position closed at the end, realised trade pnl is the whole change in equity
    flat = simulate(
        open_,
        high,
        low,
        close,
        *sig,
        config=SimConfig(
            fee_bps=10, slippage_bps=2, stop_loss=0.02, init_cash=1000.0, close_at_end=True
        ),
    )
    assert flat.trades[:, nb.T_PNL].sum() == pytest.approx(flat.equity[-1] - 1000.0, rel=1e-9)
    assert flat.stats[nb.S_FINAL_EQUITY] == flat.equity[-1]


def test_inputs_are_never_written_and_read_only_arrays_work() -> None:
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 500)))
    le, lx = rng.random(500) < 0.05, rng.random(500) < 0.05
    arrays = [close.copy() for _ in range(4)] + [le, lx]
    for a in arrays:
        a.flags.writeable = False
    before = [a.copy() for a in arrays]
    out = simulate(*arrays, config=SimConfig(stop_loss=0.02))
    assert len(out.orders) > 0
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_shapes_and_settings_name_the_field() -> None:
    c = np.ones(5)
    with pytest.raises(InvalidInputError, match="long_entries"):
        simulate(c, c, c, c, np.ones(4, bool), None, config=SimConfig())
    with pytest.raises(InvalidInputError, match="fill"):
        SimConfig(fill="tomorrow")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="fee_bps"):
        SimConfig(fee_bps=-1)
    with pytest.raises(InvalidInputError, match="stop_loss"):
        SimConfig(stop_loss=1.5)


def test_fees_grinding_equity_to_zero_end_the_run_at_minus_100_percent() -> None:
    # 15,588 round trips at 10 bps grind the account to exactly 0.0; the bar return after
    # that used to divide by zero inside the kernel and fail the whole trial.
    import cryptoorchestrator as co

    rng = np.random.default_rng(42)
    n = 500_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    bars = {
        "timestamp": 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000,
        "open": open_,
        "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999,
        "close": close,
        "volume": np.ones(n),
    }
    result = co.backtest("sma_cross", bars, params={"fast": 5, "slow": 20}, fee_bps=10.0)
    assert result.metrics["final_equity"] == 0.0
    assert result.metrics["total_return"] == -1.0
    assert np.isfinite(result.metrics["sharpe"])
