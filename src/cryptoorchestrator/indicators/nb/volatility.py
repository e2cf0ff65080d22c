"""True range, ATR and NATR as numba kernels, operation for operation as TA-Lib 0.8."""

import numpy as np
from numba import njit

from cryptoorchestrator.indicators.nb.common import U1, fill_nan_nb, first_valid3_nb
from cryptoorchestrator.indicators.nb.fma import fma_nb


@njit(cache=True, nogil=True)
def _true_range(high: float, low: float, prev_close: float) -> float:
    value = high - low
    other = abs(prev_close - high)
    if other > value:
        value = other
    other = abs(low - prev_close)
    if other > value:
        value = other
    return value


@njit(cache=True, nogil=True)
def trange_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, out: np.ndarray) -> None:
    """True range (from the second bar) into ``out``."""
    n = close.shape[0]
    beg = first_valid3_nb(high, low, close)
    fill_nan_nb(out, beg + 1)
    for i in range(np.uint64(beg) + U1, np.uint64(n)):
        out[i] = _true_range(high[i], low[i], close[i - U1])


@njit(cache=True, nogil=True)
def _atr_seed_nb(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, out: np.ndarray
) -> tuple[int, float]:
    """Fill the NaN prefix; return the first output index and the ATR there (the mean TR)."""
    n = close.shape[0]
    beg = first_valid3_nb(high, low, close)
    start = beg + period
    fill_nan_nb(out, start)
    if start >= n:
        return n, 0.0
    total = 0.0
    for i in range(beg + 1, start + 1):
        total += _true_range(high[i], low[i], close[i - 1])
    return start, total / period


@njit(cache=True, nogil=True)
def atr_nb(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, out: np.ndarray
) -> None:
    """Wilder's average true range into ``out``."""
    n = close.shape[0]
    start, prev = _atr_seed_nb(high, low, close, period, out)
    if start >= n:
        return
    out[start] = prev
    b = (period - 1) / period
    a = 1.0 - b
    for i in range(np.uint64(start) + U1, np.uint64(n)):
        prev = fma_nb(prev, b, _true_range(high[i], low[i], close[i - U1]) * a)
        out[i] = prev


@njit(cache=True, nogil=True, error_model="numpy")
def natr_nb(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, out: np.ndarray
) -> None:
    """ATR as a percentage of close into ``out`` (TA-Lib answers NATR(1) with ATR(1)).

    A kernel of its own, not a flag of :func:`atr_nb`: one function compiled for both made LLVM
    lay out the ATR loop differently, and ATR ran 6 % slower than TA-Lib's.
    """
    n = close.shape[0]
    if period == 1:
        atr_nb(high, low, close, period, out)
        return
    start, prev = _atr_seed_nb(high, low, close, period, out)
    if start >= n:
        return
    out[start] = _normalize(prev, close[start])
    b = (period - 1) / period
    a = 1.0 - b
    # The division by close sits in the same loop as the recurrence, as in TA-Lib: it is off
    # the FMA chain's critical path, so out-of-order cores overlap it; two bars per iteration
    # give the scheduler both divisions at once. A zero close's quotient (inf or NaN, numpy's
    # error model) is computed and thrown away.
    un = np.uint64(n)
    two = np.uint64(2)
    i = np.uint64(start) + U1
    while i + U1 < un:
        p0 = fma_nb(prev, b, _true_range(high[i], low[i], close[i - U1]) * a)
        prev = fma_nb(p0, b, _true_range(high[i + U1], low[i + U1], close[i]) * a)
        c0 = close[i]
        c1 = close[i + U1]
        q0 = (p0 / c0) * 100.0
        q1 = (prev / c1) * 100.0
        out[i] = 0.0 if c0 == 0.0 else q0
        out[i + U1] = 0.0 if c1 == 0.0 else q1
        i += two
    if i < un:
        prev = fma_nb(prev, b, _true_range(high[i], low[i], close[i - U1]) * a)
        c = close[i]
        q = (prev / c) * 100.0
        out[i] = 0.0 if c == 0.0 else q


@njit(cache=True, nogil=True)
def _normalize(value: float, close: float) -> float:
    if close == 0.0:
        return 0.0
    return (value / close) * 100.0
