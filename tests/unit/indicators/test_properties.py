"""Range and ordering properties that must hold for any prices (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import cryptoorchestrator.indicators as ci

PRICE = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
FAST = settings(max_examples=60, deadline=None)


@st.composite
def ohlcv(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(min_value=0, max_value=120))
    a = draw(arrays(np.float64, n, elements=PRICE))
    b = draw(arrays(np.float64, n, elements=PRICE))
    c = draw(arrays(np.float64, n, elements=st.floats(0.0, 1.0)))
    high = np.maximum(a, b)
    low = np.minimum(a, b)
    close = low + (high - low) * c
    volume = draw(arrays(np.float64, n, elements=st.floats(0.0, 1e6)))
    return high, low, close, volume


def _within(x: np.ndarray, lo: float, hi: float) -> bool:
    valid = x[~np.isnan(x)]
    return bool(np.all((valid >= lo - 1e-9) & (valid <= hi + 1e-9)))


@FAST
@given(ohlcv(), st.integers(2, 30))
def test_rsi_stays_in_0_100(bars: tuple[np.ndarray, ...], period: int) -> None:
    assert _within(ci.rsi(bars[2], period), 0.0, 100.0)


@FAST
@given(ohlcv(), st.integers(1, 15), st.integers(1, 5), st.integers(1, 5))
def test_stoch_stays_in_0_100(bars: tuple[np.ndarray, ...], fk: int, sk: int, sd: int) -> None:
    high, low, close, _ = bars
    k, d = ci.stoch(high, low, close, fk, sk, 0, sd, 0)
    assert _within(k, 0.0, 100.0)
    assert _within(d, 0.0, 100.0)


@FAST
@given(ohlcv(), st.integers(2, 30))
def test_mfi_stays_in_0_100(bars: tuple[np.ndarray, ...], period: int) -> None:
    high, low, close, volume = bars
    assert _within(ci.mfi(high, low, close, volume, period), 0.0, 100.0)


@FAST
@given(ohlcv(), st.integers(2, 30))
def test_willr_stays_in_minus_100_0(bars: tuple[np.ndarray, ...], period: int) -> None:
    high, low, close, _ = bars
    assert _within(ci.willr(high, low, close, period), -100.0, 0.0)


@FAST
@given(ohlcv(), st.integers(2, 40), st.floats(0.0, 4.0), st.floats(0.0, 4.0))
def test_bbands_are_ordered(
    bars: tuple[np.ndarray, ...], period: int, up: float, dn: float
) -> None:
    upper, middle, lower = ci.bbands(bars[2], period, up, dn)
    valid = ~np.isnan(middle)
    assert np.all(upper[valid] >= middle[valid])
    assert np.all(middle[valid] >= lower[valid])


@FAST
@given(ohlcv(), st.integers(1, 30))
def test_atr_and_trange_are_non_negative(bars: tuple[np.ndarray, ...], period: int) -> None:
    high, low, close, _ = bars
    for series in (ci.atr(high, low, close, period), ci.trange(high, low, close)):
        valid = series[~np.isnan(series)]
        assert np.all(valid >= 0.0)


@FAST
@given(ohlcv(), st.integers(2, 30))
def test_rolling_extremes_bound_the_input(bars: tuple[np.ndarray, ...], period: int) -> None:
    close = bars[2]
    hi = ci.rolling_max(close, period)
    lo = ci.rolling_min(close, period)
    for i in range(period - 1, close.shape[0]):
        window = close[i - period + 1 : i + 1]
        assert hi[i] == window.max()
        assert lo[i] == window.min()
