"""On-balance volume and volume-weighted average prices as numba kernels."""

import numpy as np
from numba import njit

from cryptoorchestrator.indicators.nb.common import fill_nan_nb, first_valid2_nb, first_valid4_nb


@njit(cache=True, nogil=True)
def obv_nb(close: np.ndarray, volume: np.ndarray, out: np.ndarray) -> None:
    """On-balance volume into ``out``, starting from the first bar's volume as TA-Lib."""
    n = close.shape[0]
    if n == 0:
        return
    beg = first_valid2_nb(close, volume)
    fill_nan_nb(out, beg)
    prev_obv = volume[beg]
    prev = close[beg]
    for i in range(np.uint64(beg), np.uint64(n)):
        value = close[i]
        if value > prev:
            prev_obv += volume[i]
        elif value < prev:
            prev_obv -= volume[i]
        out[i] = prev_obv
        prev = value


@njit(cache=True, nogil=True)
def vwap_rolling_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    period: int,
    out: np.ndarray,
) -> None:
    """Rolling VWAP of the typical price ``(h+l+c)/3`` over ``period`` bars into ``out``.

    Running sums are rebuilt from the window every ``32 * period`` bars so rounding drift stays
    bounded; a window without volume gives NaN.
    """
    n = close.shape[0]
    beg = first_valid4_nb(high, low, close, volume)
    start = beg + period - 1
    fill_nan_nb(out, start)
    if start >= n:
        return
    pv = 0.0
    vol = 0.0
    for i in range(beg, start):
        pv += (high[i] + low[i] + close[i]) / 3.0 * volume[i]
        vol += volume[i]
    anchor = 32 * period
    countdown = anchor
    for i in range(start, n):
        countdown -= 1
        if countdown == 0:
            countdown = anchor
            pv = 0.0
            vol = 0.0
            for j in range(i - period + 1, i):
                pv += (high[j] + low[j] + close[j]) / 3.0 * volume[j]
                vol += volume[j]
        pv += (high[i] + low[i] + close[i]) / 3.0 * volume[i]
        vol += volume[i]
        out[i] = pv / vol if vol > 0.0 else np.nan
        j = i - period + 1
        pv -= (high[j] + low[j] + close[j]) / 3.0 * volume[j]
        vol -= volume[j]


@njit(cache=True, nogil=True)
def vwap_session_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    timestamps: np.ndarray,
    session_ms: int,
    offset_ms: int,
    out: np.ndarray,
) -> None:
    """Session-anchored VWAP: cumulative sums restart when ``(t - offset) // session`` changes."""
    n = close.shape[0]
    pv = 0.0
    vol = 0.0
    session = np.int64(0)
    for i in range(n):
        current = (timestamps[i] - offset_ms) // session_ms
        if i == 0 or current != session:
            session = current
            pv = 0.0
            vol = 0.0
        v = volume[i]
        tp = (high[i] + low[i] + close[i]) / 3.0
        if v == v and tp == tp:
            pv += tp * v
            vol += v
        out[i] = pv / vol if vol > 0.0 else np.nan
