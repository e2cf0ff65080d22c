"""The engine against vectorbt's ``Portfolio.from_signals`` (close fills, same fees).

vectorbt's own min_size (1e-8) would make it stop trading silently once equity has been
ground down by fees, so it is set to 0, and records (not ``final_value``) are compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pytest
import talib

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate

vbt = pytest.importorskip("vectorbt")


def _cross_signals(close: np.ndarray, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
    f, s = talib.SMA(close, fast), talib.SMA(close, slow)
    above = f > s
    below = f < s
    valid = ~(np.isnan(f) | np.isnan(s))
    prev_valid = np.r_[False, valid[:-1]]
    entries = above & ~np.r_[False, above[:-1]] & prev_valid
    exits = below & ~np.r_[False, below[:-1]] & prev_valid
    return entries, exits


def _assert_same(
    close: np.ndarray,
    entries: np.ndarray,
    exits: np.ndarray,
    fee_bps: float,
    slippage_bps: float = 0.0,
    init_cash: float = 100.0,
) -> int:
    cfg = SimConfig(fee_bps=fee_bps, slippage_bps=slippage_bps, fill="close", init_cash=init_cash)
    out = simulate(close, close, close, close, entries, exits, config=cfg)
    pf = vbt.Portfolio.from_signals(
        close,
        entries,
        exits,
        fees=fee_bps / 1e4,
        slippage=slippage_bps / 1e4,
        init_cash=init_cash,
        min_size=0.0,
    )
    rec = pf.orders.values
    assert len(rec) == len(out.orders) > 0
    np.testing.assert_array_equal(rec["idx"], out.orders[:, nb.O_BAR].astype(np.int64))
    np.testing.assert_array_equal(rec["size"], out.orders[:, nb.O_QTY])
    np.testing.assert_array_equal(rec["price"], out.orders[:, nb.O_PRICE])
    np.testing.assert_array_equal(rec["fees"], out.orders[:, nb.O_FEE])
    np.testing.assert_array_equal(rec["side"] == 0, out.orders[:, nb.O_SIDE] > 0)
    value = pf.value().to_numpy()
    np.testing.assert_allclose(out.equity, value, rtol=1e-9, atol=0)
    assert out.stats[nb.S_FINAL_EQUITY] == pytest.approx(value[-1], rel=1e-9)
    return len(rec)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("fee_bps", "slippage_bps"), [(0.0, 0.0), (10.0, 0.0), (7.5, 5.0)])
def test_random_walk_random_signals(seed: int, fee_bps: float, slippage_bps: float) -> None:
    rng = np.random.default_rng(seed)
    n = 5_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    entries = rng.random(n) < 0.02
    exits = rng.random(n) < 0.02
    _assert_same(close, entries, exits, fee_bps, slippage_bps)


@pytest.mark.parametrize(("fast", "slow"), [(10, 50), (5, 20), (20, 100)])
def test_random_walk_sma_cross(fast: int, slow: int) -> None:
    rng = np.random.default_rng(fast * slow)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.005, 20_000)))
    _assert_same(close, *_cross_signals(close, fast, slow), fee_bps=10.0, init_cash=10_000.0)


def test_real_binance_1h_candles(shared_data: Path) -> None:
    table = feather.read_table(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    close = table.column("close").to_numpy()
    n_orders = _assert_same(close, *_cross_signals(close, 10, 50), fee_bps=10.0, init_cash=10_000.0)
    assert n_orders > 1000
