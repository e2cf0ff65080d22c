"""Batch kernels against their single-period versions; VWAP and crossing signals against loops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import talib

import cryptoorchestrator.indicators as ci


@pytest.fixture(scope="module")
def close() -> np.ndarray:
    rng = np.random.default_rng(4)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 3000)))
    x[:7] = np.nan
    return x


PERIODS = [1, 2, 3, 7, 20, 50, 200, 2999, 5000]


def test_sma_batch_rows_are_bit_identical_to_sma(close: np.ndarray) -> None:
    out = ci.sma_batch(close, PERIODS)
    assert out.shape == (len(PERIODS), close.shape[0])
    for row, p in zip(out, PERIODS, strict=True):
        np.testing.assert_array_equal(row, ci.sma(close, p))
    np.testing.assert_array_equal(out[3], talib.SMA(close, 7))


def test_sma_batch_division_is_exact_across_magnitudes_and_periods() -> None:
    # The batch divides by multiplying with 1/p and correcting with two fma (Markstein); the
    # result must be the correctly rounded quotient, hence equal to sma()'s plain division.
    rng = np.random.default_rng(17)
    for _ in range(12):
        x = 10 ** rng.uniform(-8, 8) * np.exp(np.cumsum(rng.normal(0.0, 0.02, 5000)))
        periods = [int(p) for p in rng.integers(1, 400, 10)] + [3, 7, 49, 97, 241]
        out = ci.sma_batch(x, periods)
        for row, p in zip(out, periods, strict=True):
            np.testing.assert_array_equal(row, ci.sma(x, p))


def test_ema_batch_rows_are_bit_identical_to_ema(close: np.ndarray) -> None:
    out = ci.ema_batch(close, PERIODS)
    for row, p in zip(out, PERIODS, strict=True):
        np.testing.assert_array_equal(row, ci.ema(close, p))
    np.testing.assert_array_equal(out[4], talib.EMA(close, 20))


def test_rsi_batch_rows_are_bit_identical_to_rsi(close: np.ndarray) -> None:
    periods = [2, 3, 14, 50, 2999]
    out = ci.rsi_batch(close, periods)
    for row, p in zip(out, periods, strict=True):
        np.testing.assert_array_equal(row, ci.rsi(close, p))
    np.testing.assert_array_equal(out[2], talib.RSI(close, 14))


def test_batch_rows_match_single_kernels_with_embedded_nan(close: np.ndarray) -> None:
    x = close.copy()
    x[1500] = np.nan
    for batch, single, periods in (
        (ci.sma_batch, ci.sma, [1, 3, 30]),
        (ci.ema_batch, ci.ema, [1, 3, 30]),
        (ci.rsi_batch, ci.rsi, [2, 3, 30]),
    ):
        out = batch(x, periods)
        for row, p in zip(out, periods, strict=True):
            np.testing.assert_array_equal(row, single(x, p))


def test_batch_accepts_numpy_periods_and_out(close: np.ndarray) -> None:
    buf = np.empty((2, close.shape[0]))
    result = ci.sma_batch(close, np.array([5, 9]), out=buf)
    assert result is buf
    np.testing.assert_array_equal(buf[1], ci.sma(close, 9))


def _vwap_loop(h: Any, lo: Any, c: Any, v: Any, p: int) -> np.ndarray:
    tp = (h + lo + c) / 3.0
    out = np.full(c.shape[0], np.nan)
    for i in range(p - 1, c.shape[0]):
        w = slice(i - p + 1, i + 1)
        out[i] = np.sum(tp[w] * v[w]) / np.sum(v[w])
    return out


def test_rolling_vwap_equals_a_window_loop() -> None:
    rng = np.random.default_rng(9)
    n = 3000
    c = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    h, lo, v = c * 1.01, c * 0.99, rng.random(n) * 100 + 1
    for p in (1, 5, 60):
        np.testing.assert_allclose(ci.vwap(h, lo, c, v, p), _vwap_loop(h, lo, c, v, p), rtol=1e-11)


def test_rolling_vwap_without_volume_is_nan() -> None:
    x = np.ones(10)
    v = np.zeros(10)
    assert np.isnan(ci.vwap(x, x, x, v, 3)).all()


def test_session_vwap_restarts_at_midnight_utc() -> None:
    hour = 3_600_000
    ts = np.arange(48, dtype=np.int64) * hour + 22 * hour  # 22:00 on day 0 to 21:00 on day 2
    price = np.arange(48, dtype=np.float64) + 100.0
    volume = np.arange(48, dtype=np.float64) + 1.0
    out = ci.session_vwap(price, price, price, volume, ts, "1d")
    # Bars 0-1 are day 0; bar 2 (00:00 of day 1) starts a new session.
    assert out[0] == price[0]
    assert out[1] == pytest.approx(np.average(price[:2], weights=volume[:2]), rel=1e-14)
    assert out[2] == price[2]
    assert out[25] == pytest.approx(np.average(price[2:26], weights=volume[2:26]), rel=1e-14)
    assert out[26] == price[26]


def test_session_vwap_weekly_sessions_start_on_monday() -> None:
    day = 86_400_000
    ts = np.arange(14, dtype=np.int64) * day  # 1970-01-01 (Thursday) onwards
    price = np.arange(14, dtype=np.float64) + 1.0
    out = ci.session_vwap(price, price, price, np.ones(14), ts, "1w")
    monday = 4  # 1970-01-05
    assert out[monday] == price[monday]
    assert out[monday - 1] == pytest.approx(price[:monday].mean())


def test_session_vwap_refuses_bad_arguments() -> None:
    x = np.ones(3)
    with pytest.raises(ValueError, match="session: '2d' is not known"):
        ci.session_vwap(x, x, x, x, np.arange(3), "2d")
    with pytest.raises(ValueError, match="timestamps"):
        ci.session_vwap(x, x, x, x, np.ones(3))


def test_crossed_above_and_below() -> None:
    a = np.array([1.0, 2.0, 3.0, 2.0, 1.0, np.nan, 3.0, 3.0])
    b = np.full(8, 2.0)
    np.testing.assert_array_equal(
        ci.crossed_above(a, b), [False, False, True, False, False, False, False, False]
    )
    np.testing.assert_array_equal(
        ci.crossed_below(a, 2.0), [False, False, False, False, True, False, False, False]
    )


def test_crossed_above_detects_fast_sma_crossing_slow() -> None:
    x = np.r_[np.linspace(10, 5, 50), np.linspace(5, 10, 50)]
    fast, slow = ci.sma(x, 3), ci.sma(x, 10)
    cross = ci.crossed_above(fast, slow)
    (idx,) = np.nonzero(cross)
    assert idx.size == 1
    assert fast[idx[0]] > slow[idx[0]]
    assert fast[idx[0] - 1] <= slow[idx[0] - 1]


@pytest.mark.parametrize("count", [1, 4, 7, 8, 9, 12, 13, 17, 24])
def test_sma_batch_groups_are_bit_identical_to_sma(count: int) -> None:
    # Rows advance in register groups of 8, then 4, then one at a time after the longest
    # warm-up, dividing with two fma: every row must come out as sma() computes it alone.
    rng = np.random.default_rng(count)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 5_000)))
    x[:3] = np.nan
    periods = [int(p) for p in rng.integers(1, 600, count)]
    out = ci.sma_batch(x, periods)
    for row, p in zip(out, periods, strict=True):
        np.testing.assert_array_equal(row, ci.sma(x, p))


@pytest.mark.parametrize("count", [1, 3, 4, 5, 8, 9, 12, 13, 20])
def test_ema_batch_groups_are_bit_identical_to_ema(count: int) -> None:
    # Rows advance in register groups of 8, then 4, then one at a time after the longest
    # warm-up: every row must equal ema() and TA-Lib's EMA.
    rng = np.random.default_rng(200 + count)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 5_000)))
    x[:3] = np.nan
    periods = [int(p) for p in rng.integers(1, 600, count)]
    out = ci.ema_batch(x, periods)
    for row, p in zip(out, periods, strict=True):
        np.testing.assert_array_equal(row, ci.ema(x, p))
        np.testing.assert_array_equal(row, talib.EMA(x, p))


@pytest.mark.parametrize("count", [1, 3, 4, 5, 8, 9, 12, 13, 20])
def test_rsi_batch_groups_and_tiles_are_bit_identical_to_rsi(count: int) -> None:
    # Rows advance in register groups of 8, then 4, then one at a time, bars in tiles of 512
    # whose divisions run in a second pass: every row must equal rsi() and TA-Lib's RSI.
    rng = np.random.default_rng(100 + count)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 5_000)))
    x[:3] = np.nan
    x[3:1000] = 100.0  # flat at first: totals of exactly zero (RSI 0) in the first tiles
    periods = [int(p) for p in rng.integers(2, 600, count)]
    periods[0] = 2
    out = ci.rsi_batch(x, periods)
    for row, p in zip(out, periods, strict=True):
        np.testing.assert_array_equal(row, ci.rsi(x, p))
        np.testing.assert_array_equal(row, talib.RSI(x, p))


def _cross_loop(a: np.ndarray, b: np.ndarray, above: bool) -> np.ndarray:
    out = np.zeros(a.shape[0], dtype=np.bool_)
    for i in range(1, a.shape[0]):
        if above:
            out[i] = a[i] > b[i] and a[i - 1] <= b[i - 1]
        else:
            out[i] = a[i] < b[i] and a[i - 1] >= b[i - 1]
    return out


@pytest.mark.parametrize("n", [0, 1, 2, 33, 1000])
def test_crossings_and_out_buffers_equal_the_loop(n: int) -> None:
    rng = np.random.default_rng(n)
    # rounded steps make ties (a == b) common; NaN holes must never cross
    a = np.round(np.cumsum(rng.normal(size=n)), 0)
    b = np.round(np.cumsum(rng.normal(size=n)), 0)
    a[rng.random(n) < 0.05] = np.nan
    up, down = _cross_loop(a, b, True), _cross_loop(a, b, False)
    np.testing.assert_array_equal(ci.crossed_above(a, b), up)
    np.testing.assert_array_equal(ci.crossed_below(a, b), down)
    got_up, got_down = ci.crossings(a, b)
    np.testing.assert_array_equal(got_up, up)
    np.testing.assert_array_equal(got_down, down)
    bufs = (np.ones(n, dtype=np.bool_), np.ones(n, dtype=np.bool_))
    res = ci.crossings(a, b, out=bufs)
    assert res[0] is bufs[0]
    assert res[1] is bufs[1]
    np.testing.assert_array_equal(bufs[0], up)
    np.testing.assert_array_equal(bufs[1], down)
    buf = np.ones(n, dtype=np.bool_)
    assert ci.crossed_below(a, b, out=buf) is buf
    np.testing.assert_array_equal(buf, down)


def test_crossings_against_a_threshold_and_bad_out_buffers() -> None:
    a = np.array([1.0, 2.0, 3.0, 2.0, 1.0, np.nan, 3.0, 3.0])
    up, down = ci.crossings(a, 2.0)
    np.testing.assert_array_equal(up, ci.crossed_above(a, 2.0))
    np.testing.assert_array_equal(down, ci.crossed_below(a, 2.0))
    with pytest.raises(ci.IndicatorInputError, match="out"):
        ci.crossed_above(a, 2.0, out=np.empty(8))  # float, not bool
    with pytest.raises(ci.IndicatorInputError, match="out"):
        ci.crossed_above(a, 2.0, out=np.empty(7, dtype=np.bool_))
    with pytest.raises(ci.IndicatorInputError, match="out"):
        ci.crossings(a, 2.0, out=(np.empty(8, dtype=np.bool_),))  # type: ignore[arg-type]
    shared = np.empty(8, dtype=np.bool_)
    with pytest.raises(ci.IndicatorInputError, match="out"):
        ci.crossings(a, 2.0, out=(shared, shared))
    frozen = np.empty(8, dtype=np.bool_)
    frozen.flags.writeable = False
    with pytest.raises(ci.IndicatorInputError, match="out"):
        ci.crossed_below(a, 2.0, out=frozen)
