"""The stats-only sweep kernel returns the full single-symbol kernel's statistics, bit for bit."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb, sweep_nb
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.evaluate import EngineInputs, simulate_stats

N_CONFIGS = 300


def _ohlc(rng: np.random.Generator, n: int, vol: float) -> list[np.ndarray]:
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, vol / 3, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol / 2, n)))
    return [a.reshape(-1, 1) for a in (open_, high, low, close)]


def _signals(rng: np.random.Generator, close: np.ndarray, shorts: bool) -> list[np.ndarray]:
    n = close.shape[0]
    if rng.random() < 0.5:
        # dense random signals: entries, exits, conflicts on one bar, reversals
        p = rng.uniform(0.005, 0.08)
        sig = [rng.random(n) < p for _ in range(4)]
    else:
        # sparse crossings: long flat stretches and long holds (the kernels' skipping paths)
        c = close[:, 0]
        fast = np.convolve(c, np.ones(5) / 5)[:n]
        slow = np.convolve(c, np.ones(int(rng.integers(10, 60))) / 40)[:n]
        above = fast > slow
        up = np.r_[False, above[1:] & ~above[:-1]]
        down = np.r_[False, ~above[1:] & above[:-1]]
        sig = [up, down, down.copy(), up.copy()]
        if rng.random() < 0.2:
            sig[0][-1] = True  # an entry on the last bar
    if not shorts:
        sig[2][:] = False
        sig[3][:] = False
    return [s.reshape(-1, 1) for s in sig]


def _stop(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return np.full((1, 1), np.nan)
    if kind == 1:
        return np.full((1, 1), rng.uniform(low, high))
    per_bar = rng.uniform(low, high, (n, 1))
    per_bar[rng.random((n, 1)) < 0.1] = np.nan  # no stop for entries on some bars
    return per_bar


def _frozen(value: Any) -> Any:
    # read-only, as simulate_stats passes them: the kernel's one compiled specialisation
    if isinstance(value, np.ndarray):
        value = value.view()
        value.flags.writeable = False
    return value


def _config(seed: int) -> tuple[Any, ...]:
    """Return a random ``simulate_1d_nb`` argument tuple, less ``equity_out``, read-only."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 1500))
    vol = float(rng.choice([0.005, 0.01, 0.03]))
    prices = _ohlc(rng, n, vol)
    sig = _signals(rng, prices[3], shorts=bool(rng.random() < 0.5))
    stops = [_stop(rng, n, 0.005, 0.08), _stop(rng, n, 0.01, 0.2), _stop(rng, n, 0.005, 0.08)]
    use_stops = bool(rng.random() < 0.9) and any(not np.isnan(s).all() for s in stops)
    size_mode = int(rng.integers(3))
    levered = rng.random() < 0.4
    max_gross = float(rng.choice([2.0, 5.0, 20.0])) if levered else float(rng.choice([1.0, 0.5]))
    size = {
        nb.SIZE_FRACTION: float(rng.uniform(0.2, max(1.0, max_gross))),
        nb.SIZE_QUOTE: float(rng.uniform(100.0, 30_000.0)),
        nb.SIZE_RISK: float(rng.uniform(0.005, 0.05)),
    }[size_mode]
    max_position = float(rng.uniform(0.3, max(1.0, max_gross)))
    args = (
        *prices,
        *sig,
        *stops,
        np.full(1, float(rng.choice([0.0, 0.0, 0.001, 0.1]))),  # qty_step
        np.full(1, float(rng.choice([0.0, 0.0, 0.01]))),  # min_qty
        np.full(1, float(rng.choice([0.0, 5.0, 500.0]))),  # min_notional
        np.full(1, float(rng.choice([0.0, 0.0, 0.01, 0.5]))),  # price_tick
        float(rng.choice([10_000.0, 1_000.0])),
        float(rng.choice([0.0, 0.0005, 0.001, 0.01])),  # fee
        float(rng.choice([0.0, 0.0, 0.0005, 0.003])),  # slippage
        bool(rng.random() < 0.5),  # fill at close
        size_mode,
        size,
        max_position,
        1,
        bool(rng.random() < 0.5),  # close at end
        use_stops,
        max_gross,
        float(rng.choice([0.0, 0.005, 0.05, 0.3])),  # maintenance margin
        bool(rng.random() < 0.8),  # liquidate
    )
    return tuple(_frozen(a) for a in args)


def test_sweep_kernel_equals_full_kernel_over_random_configs() -> None:
    seen = np.zeros(nb.N_STATS)
    reasons: set[int] = set()
    for seed in range(N_CONFIGS):
        args = _config(seed)
        orders, _, expected = nb.simulate_1d_nb(*args[:25], np.empty(0), *args[25:])
        got = sweep_nb.sweep_stats_1d_nb(*args)
        # identical floats, NaN included (assert_array_equal treats NaN == NaN)
        np.testing.assert_array_equal(got, expected, err_msg=f"seed {seed}")
        seen += expected != 0
        reasons.update(int(r) for r in orders[:, nb.O_REASON])
    # every exit reason occurs, so each of the sweep kernel's exit paths is compared: signal,
    # stop-loss, take-profit, trailing stop, end of the run, liquidation
    assert reasons == {
        nb.REASON_SIGNAL,
        nb.REASON_STOP_LOSS,
        nb.REASON_TAKE_PROFIT,
        nb.REASON_TRAILING_STOP,
        nb.REASON_END,
        nb.REASON_LIQUIDATION,
    }
    # the configurations reach every statistic the records feed: trades, wins, losses, fees,
    # open trades at the end, skipped orders, liquidations (a lone symbol is never refused for
    # margin: flat, its room is max_gross x cash > 0)
    for k in (
        nb.S_TRADES,
        nb.S_WINS,
        nb.S_GROSS_LOSS,
        nb.S_FEES,
        nb.S_OPEN_TRADES,
        nb.S_SKIPPED_SMALL,
        nb.S_LIQUIDATED,
        nb.S_MAX_DD_DURATION,
    ):
        assert seen[k] >= 5, k


def _inputs(seed: int, per_bar_stop: bool) -> EngineInputs:
    rng = np.random.default_rng(seed)
    n = 800
    o, h, lo, c = (a[:, 0] for a in _ohlc(rng, n, 0.01))
    sig = [rng.random(n) < 0.03 for _ in range(4)]
    stop = rng.uniform(0.01, 0.05, n) if per_bar_stop else None
    return EngineInputs(o, h, lo, c, *sig, stop, None, 0.04 if seed % 2 else None)


@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize("per_bar_stop", [False, True])
def test_simulate_stats_is_simulate_stats_vector(allow_short: bool, per_bar_stop: bool) -> None:
    config = SimConfig(fee_bps=10.0, slippage_bps=2.0, allow_short=allow_short, take_profit=0.06)
    for seed in range(4):
        inputs = _inputs(seed, per_bar_stop)
        full = simulate(
            inputs.open,
            inputs.high,
            inputs.low,
            inputs.close,
            inputs.long_entries,
            inputs.long_exits,
            inputs.short_entries,
            inputs.short_exits,
            config=config,
            stop_loss=inputs.stop_loss,
            take_profit=inputs.take_profit,
            trailing_stop=inputs.trailing_stop,
        )
        np.testing.assert_array_equal(simulate_stats(inputs, config), full.stats)


def test_simulate_stats_of_several_symbols_takes_the_general_kernel() -> None:
    rng = np.random.default_rng(3)
    n = 500
    cols = [_ohlc(rng, n, 0.01) for _ in range(2)]
    o, h, lo, c = (np.hstack([col[k] for col in cols]) for k in range(4))
    sig = [rng.random((n, 2)) < 0.03 for _ in range(4)]
    inputs = EngineInputs(o, h, lo, c, *sig, 0.03, None, None)
    config = SimConfig(size=0.5)
    full = simulate(o, h, lo, c, *sig, config=config, stop_loss=0.03)
    np.testing.assert_array_equal(simulate_stats(inputs, config), full.stats)


def test_sweep_kernel_cache_goes_stale_with_the_helpers_file() -> None:
    # numba keys a cached kernel on its own file only; the sweep kernel inlines nb.py's
    # helpers, so nb.py's stamp is part of its cache key (an edit there recompiles it)
    cache_file = sweep_nb.sweep_stats_1d_nb._cache._cache_file
    st = os.stat(nb.__file__)
    assert cache_file._source_stamp[1] == ((st.st_mtime, st.st_size),)
