"""Rolling extremes, parabolic SAR and cross detection as numba kernels."""

import numpy as np
from numba import njit

from cryptoorchestrator.indicators.nb.common import (
    block_max_nb,
    block_min_nb,
    fill_nan_nb,
    first_valid2_nb,
    first_valid_nb,
)
from cryptoorchestrator.indicators.nb.fma import fma_nb


@njit(cache=True, nogil=True)
def rolling_extreme_nb(x: np.ndarray, period: int, is_max: bool, out: np.ndarray) -> None:
    """Rolling maximum (``is_max``) or minimum over ``period`` bars, as TA-Lib's MAX/MIN.

    Embedded NaN bars give TA-Lib 0.8's result too (see :func:`block_max_nb`).
    """
    n = x.shape[0]
    beg = first_valid_nb(x)
    start = beg + period - 1
    if start >= n:
        fill_nan_nb(out, n)
        return
    if is_max:
        block_max_nb(x, beg, period, out)
    else:
        block_min_nb(x, beg, period, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def sar_nb(
    high: np.ndarray, low: np.ndarray, acceleration: float, maximum: float, out: np.ndarray
) -> None:
    """Parabolic SAR (Wilder), with TA-Lib's choice of the initial direction, into ``out``."""
    n = high.shape[0]
    beg = first_valid2_nb(high, low)
    start = beg + 1
    fill_nan_nb(out, start)
    if start >= n:
        return
    af = acceleration
    if af > maximum:
        af = maximum
        acceleration = maximum
    diff_p = high[start] - high[start - 1]
    diff_m = low[start - 1] - low[start]
    is_long = not (diff_m > 0 and diff_p < diff_m)
    new_high = high[start - 1]
    new_low = low[start - 1]
    if is_long:
        ep = high[start]
        sar = new_low
    else:
        ep = low[start]
        sar = new_high
    new_low = low[start]
    new_high = high[start]
    for today in range(np.uint64(start), np.uint64(n)):
        prev_low = new_low
        prev_high = new_high
        new_low = low[today]
        new_high = high[today]
        if is_long:
            if new_low <= sar:
                is_long = False
                sar = ep
                if sar < prev_high:
                    sar = prev_high
                if sar < new_high:
                    sar = new_high
                out[today] = sar
                af = acceleration
                ep = new_low
                sar = fma_nb(af, ep - sar, sar)
                if sar < prev_high:
                    sar = prev_high
                if sar < new_high:
                    sar = new_high
            else:
                out[today] = sar
                if new_high > ep:
                    ep = new_high
                    af += acceleration
                    if af > maximum:
                        af = maximum
                sar = fma_nb(af, ep - sar, sar)
                if sar > prev_low:
                    sar = prev_low
                if sar > new_low:
                    sar = new_low
        else:
            if new_high >= sar:
                is_long = True
                sar = ep
                if sar > prev_low:
                    sar = prev_low
                if sar > new_low:
                    sar = new_low
                out[today] = sar
                af = acceleration
                ep = new_high
                sar = fma_nb(af, ep - sar, sar)
                if sar > prev_low:
                    sar = prev_low
                if sar > new_low:
                    sar = new_low
            else:
                out[today] = sar
                if new_low < ep:
                    ep = new_low
                    af += acceleration
                    if af > maximum:
                        af = maximum
                sar = fma_nb(af, ep - sar, sar)
                if sar < prev_high:
                    sar = prev_high
                if sar < new_high:
                    sar = new_high


@njit(cache=True, nogil=True)
def crossed_nb(a: np.ndarray, b: np.ndarray, above: bool, out: np.ndarray) -> None:
    """Flag bars where ``a`` crosses above (or below) ``b``: strictly past it now, not before."""
    n = a.shape[0]
    if n == 0:
        return
    out[0] = False
    # non-short-circuit ``&`` and one loop per direction keep the body branch-free, so LLVM
    # vectorizes it; ``a <= b`` is spelled out (not ``not a > b``) so that NaN never crosses
    if above:
        for i in range(1, n):
            out[i] = (a[i] > b[i]) & (a[i - 1] <= b[i - 1])
    else:
        for i in range(1, n):
            out[i] = (a[i] < b[i]) & (a[i - 1] >= b[i - 1])


@njit(cache=True, nogil=True)
def crossings_nb(a: np.ndarray, b: np.ndarray, above: np.ndarray, below: np.ndarray) -> None:
    """Both of :func:`crossed_nb`'s outputs in one pass over ``a`` and ``b``."""
    n = a.shape[0]
    if n == 0:
        return
    above[0] = False
    below[0] = False
    for i in range(1, n):
        x, y, xp, yp = a[i], b[i], a[i - 1], b[i - 1]
        above[i] = (x > y) & (xp <= yp)
        below[i] = (x < y) & (xp >= yp)
