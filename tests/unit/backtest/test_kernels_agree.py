"""The single-symbol fast kernel and the multi-symbol kernel give identical results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cryptoorchestrator.platform.backtest import nb


def _ohlc(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.006, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.006, n)))
    return open_, high, low, close


@pytest.mark.parametrize("seed", range(6))
def test_fast_kernel_equals_general_kernel(seed: int, call_kernel: Callable[..., Any]) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    prices = [a.reshape(-1, 1) for a in _ohlc(rng, n)]
    sig = [(rng.random(n) < 0.03).reshape(-1, 1) for _ in range(4)]
    at_close = bool(seed % 2)
    size_mode = seed % 3
    stops = [np.full((1, 1), v) for v in (0.03, 0.05, 0.04)]
    if seed >= 3:
        stops[0] = rng.uniform(0.01, 0.05, (n, 1))
    step = np.full(1, 0.001 if seed % 2 else 0.0)
    tick = np.full(1, 0.01 if seed == 4 else 0.0)
    args = (
        *prices,
        *sig,
        *stops,
        step,
        np.zeros(1),
        np.full(1, 5.0),
        tick,
        10_000.0,
        0.001,
        0.0005,
        at_close,
        size_mode,
        0.5 if size_mode != 1 else 3000.0,
        0.9,
        1,
        bool(seed % 2),
        True,
    )
    eq1, eq2 = np.empty(n), np.empty(n)
    o1, t1, s1 = call_kernel(nb.simulate_1d_nb, *args, eq1)
    o2, t2, s2 = call_kernel(nb.simulate_nb, *args, eq2)
    assert len(o1) > 20
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(eq1, eq2)


def _cross(fast: np.ndarray, slow: np.ndarray, above: bool) -> np.ndarray:
    now = fast > slow if above else fast < slow
    before = fast <= slow if above else fast >= slow
    return np.r_[False, now[1:] & before[:-1]]


@pytest.mark.parametrize("seed", range(8))
def test_fast_kernel_equals_general_kernel_with_long_flat_stretches(
    seed: int, call_kernel: Callable[..., Any]
) -> None:
    # sparse crossing signals without stops: the single-symbol kernel skips flat stretches,
    # which must change nothing (equity curve, drawdown durations, ends of the run included)
    rng = np.random.default_rng(100 + seed)
    n = 4000
    prices = [a.reshape(-1, 1) for a in _ohlc(rng, n)]
    close = prices[3][:, 0]
    fast = np.convolve(close, np.ones(5) / 5)[:n]
    slow = np.convolve(close, np.ones(40) / 40)[:n]
    up, down = _cross(fast, slow, True), _cross(fast, slow, False)
    if seed % 4 == 3:
        up[-1] = True  # an entry on the last bar
    no = np.zeros(n, dtype=np.bool_)
    shorts = (down, up) if seed % 4 >= 2 else (no, no)
    sig = [s.reshape(-1, 1) for s in (up, down, *shorts)]
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
        0.001 * (seed % 3),
        0.0,
        bool(seed % 2),
        0,
        1.0,
        1.0,
        1,
        bool(seed % 2),
        False,
    )
    eq1, eq2 = np.empty(n), np.empty(n)
    o1, t1, s1 = call_kernel(nb.simulate_1d_nb, *args, eq1)
    o2, t2, s2 = call_kernel(nb.simulate_nb, *args, eq2)
    _, _, s3 = call_kernel(nb.simulate_1d_nb, *args, np.empty(0))
    assert len(o1) > 20
    assert 0 < s1[nb.S_EXPOSURE_BARS] < n
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(s1, s3)
    np.testing.assert_array_equal(eq1, eq2)
