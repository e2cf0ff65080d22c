"""Rolling extremes, parabolic SAR and cross detection as numba kernels."""

import numpy as np
from numba import njit

from cryptoorchestrator.indicators.nb.common import fill_nan_nb, first_valid2_nb, first_valid_nb
from cryptoorchestrator.indicators.nb.fma import fma_nb


@njit(cache=True, nogil=True)
def rolling_extreme_nb(x: np.ndarray, period: int, is_max: bool, out: np.ndarray) -> None:
    """Rolling maximum (``is_max``) or minimum over ``period`` bars, as TA-Lib's MAX/MIN."""
    n = x.shape[0]
    beg = first_valid_nb(x)
    start = beg + period - 1
    fill_nan_nb(out, start)
    if start >= n:
        return
    for i in range(np.uint64(beg), np.uint64(n)):
        if x[i] != x[i]:
            # NaN compares false both ways: follow TA-Lib's own rescanning algorithm exactly.
            _rescan_nb(x, beg, start, is_max, out)
            return
    _blocks_nb(x, beg, period, is_max, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def _blocks_nb(x: np.ndarray, beg: int, period: int, is_max: bool, out: np.ndarray) -> None:
    # van Herk / Gil-Werman: in blocks of ``period`` bars, the window ending at i is the suffix
    # extreme of the previous block from i - period + 1 joined with the prefix extreme of the
    # current block up to i. Three comparisons per bar whatever the data, where rescanning the
    # window whenever its extreme leaves costs O(period) per bar on trending prices.
    n = x.shape[0]
    tmp = np.empty(period)
    p = period
    for b in range(beg, n, p):
        e = min(b + p, n)
        m = x[b]
        out[b] = m
        for i in range(b + 1, e):
            v = x[i]
            if is_max:
                m = v if v > m else m
            else:
                m = v if v < m else m
            out[i] = m
        if b > beg:
            s = x[b - 1]
            tmp[p - 1] = s
            for k in range(p - 2, -1, -1):
                v = x[b - p + k]
                if is_max:
                    s = v if v > s else s
                else:
                    s = v if v < s else s
                tmp[k] = s
            for i in range(b, min(e, b + p - 1)):
                t = tmp[i - b + 1]
                o = out[i]
                if is_max:
                    out[i] = t if t > o else o
                else:
                    out[i] = t if t < o else o


@njit(cache=True, nogil=True)
def _rescan_nb(x: np.ndarray, beg: int, start: int, is_max: bool, out: np.ndarray) -> None:
    n = x.shape[0]
    trailing = beg
    best_idx = -1
    best = 0.0
    for today in range(start, n):
        value = x[today]
        if best_idx < trailing:
            best_idx = trailing
            best = x[best_idx]
            for i in range(best_idx + 1, today + 1):
                value = x[i]
                if (value > best) if is_max else (value < best):
                    best_idx = i
                    best = value
        elif (value >= best) if is_max else (value <= best):
            best_idx = today
            best = value
        out[today] = best
        trailing += 1


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
    for today in range(start, n):
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
    for i in range(1, n):
        if above:
            out[i] = a[i] > b[i] and a[i - 1] <= b[i - 1]
        else:
            out[i] = a[i] < b[i] and a[i - 1] >= b[i - 1]
