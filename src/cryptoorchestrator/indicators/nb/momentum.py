"""Momentum oscillators as numba kernels, operation for operation as TA-Lib 0.8.

RSI, STOCH, STOCHRSI, WILLR, CCI, MFI, ROC, MOM, ADX, +DI and -DI. Kernels write TA-Lib's NaN
prefix themselves and never write into their inputs.
"""

import numpy as np
from numba import njit

from cryptoorchestrator.indicators.nb.common import (
    EPSILON,
    TA_EPSILON,
    U0,
    U1,
    block_max_nb,
    block_min_nb,
    fill_nan_nb,
    first_valid3_nb,
    first_valid4_nb,
    first_valid_nb,
)
from cryptoorchestrator.indicators.nb.fma import fma_nb
from cryptoorchestrator.indicators.nb.overlap import ma_core_nb, ma_lookback_nb


@njit(cache=True, nogil=True)
def rsi_core_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> int:
    """Write Wilder's RSI from ``x[beg:]``; return the first output index."""
    n = x.shape[0]
    start = beg + period
    if start >= n:
        return n
    inv = 1.0 / period
    keep = float(period - 1)
    gain = 0.0
    loss = 0.0
    prev = x[beg]
    for i in range(beg + 1, start + 1):
        value = x[i]
        diff = value - prev
        prev = value
        if diff < 0:
            loss -= diff
        else:
            gain += diff
    gain *= inv
    loss *= inv
    total = gain + loss
    out[start] = 100.0 * (gain / total) if total > 0.0 else 0.0
    for i in range(np.uint64(start) + U1, np.uint64(n)):
        value = x[i]
        diff = value - prev
        prev = value
        # Branch-free: adding +0.0 leaves a non-negative sum's bits unchanged; NaN goes to gain.
        up = 0.0 if diff < 0.0 else diff
        down = -diff if diff < 0.0 else 0.0
        gain = (gain * keep + up) * inv
        loss = (loss * keep + down) * inv
        total = gain + loss
        out[i] = 100.0 * (gain / total) if total > 0.0 else 0.0
    return start


@njit(cache=True, nogil=True)
def rsi_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Relative strength index into ``out``."""
    start = rsi_core_nb(x, first_valid_nb(x), period, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def rsi_batch_nb(x: np.ndarray, periods: np.ndarray, out: np.ndarray) -> None:
    """RSI for several periods; row ``r`` equals ``rsi_nb(x, periods[r])`` bit for bit."""
    n = x.shape[0]
    m = periods.shape[0]
    beg = first_valid_nb(x)
    gains = np.zeros(m)
    losses = np.zeros(m)
    invs = np.empty(m)
    keeps = np.empty(m)
    last_start = beg
    for r in range(m):
        p = periods[r]
        invs[r] = 1.0 / p
        keeps[r] = float(p - 1)
        last_start = max(last_start, beg + p)
        fill_nan_nb(out[r], beg + p)
    warm = min(last_start + 1, n)
    for i in range(beg + 1, warm):
        diff = x[i] - x[i - 1]
        for r in range(m):
            s = beg + periods[r]
            if i < s:
                if diff < 0:
                    losses[r] -= diff
                else:
                    gains[r] += diff
                continue
            if i == s:
                if diff < 0:
                    losses[r] -= diff
                else:
                    gains[r] += diff
                gains[r] *= invs[r]
                losses[r] *= invs[r]
            elif diff < 0:
                gains[r] = (gains[r] * keeps[r]) * invs[r]
                losses[r] = (losses[r] * keeps[r] - diff) * invs[r]
            else:
                gains[r] = (gains[r] * keeps[r] + diff) * invs[r]
                losses[r] = (losses[r] * keeps[r]) * invs[r]
            total = gains[r] + losses[r]
            out[r, i] = 100.0 * (gains[r] / total) if total > 0.0 else 0.0
    # Rows in groups of RSI_ROWS with their averages in registers, bars in tiles of RSI_TILE:
    # the recurrences write each average gain into ``out`` and the total into a tile buffer,
    # and a second pass over the tile, still in cache, divides them. That pass vectorizes; in
    # the recurrence loop one scalar division per bar and row bounded the kernel.
    un = np.uint64(n)
    uwarm = np.uint64(warm)
    tile = np.uint64(RSI_TILE)
    totals = np.empty((RSI_ROWS, RSI_TILE))
    g = 0
    while g < m:
        h = min(m, g + RSI_ROWS)
        for t0 in range(uwarm, un, tile):
            t1 = min(t0 + tile, un)
            if h - g == RSI_ROWS:
                _rsi_avgs8_nb(x, gains, losses, keeps, invs, g, out, totals, t0, t1)
            elif h - g >= 4:
                _rsi_avgs4_nb(x, gains, losses, keeps, invs, g, out, totals, t0, t1)
                for r in range(g + 4, h):
                    _rsi_avgs1_nb(x, gains, losses, keeps, invs, r, out, totals[r - g], t0, t1)
            else:
                for r in range(g, h):
                    _rsi_avgs1_nb(x, gains, losses, keeps, invs, r, out, totals[r - g], t0, t1)
            for r in range(g, h):
                _rsi_divide_nb(out[r], totals[r - g], t0, t1)
        g = h


# Rows whose average gain and loss advance together in registers: each is a chain of a
# multiplication, an addition and a multiplication per bar, and 16 chains hide their latency.
RSI_ROWS = 8
# A group's tile: 8 rows of 512 bars of averages and totals (64 KiB) stay in L2 for the division.
RSI_TILE = 512


@njit(cache=True, nogil=True, inline="always")
def _rsi_avgs8_nb(
    x: np.ndarray,
    gains: np.ndarray,
    losses: np.ndarray,
    keeps: np.ndarray,
    invs: np.ndarray,
    g: int,
    out: np.ndarray,
    totals: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # rsi_core_nb's recurrences for rows g..g+7 and bars t0..t1-1: the average gain goes into
    # ``out``, gain + loss into ``totals`` (bar i at column i - t0).
    o0, o1, o2, o3 = out[g], out[g + 1], out[g + 2], out[g + 3]
    o4, o5, o6, o7 = out[g + 4], out[g + 5], out[g + 6], out[g + 7]
    q0, q1, q2, q3 = totals[0], totals[1], totals[2], totals[3]
    q4, q5, q6, q7 = totals[4], totals[5], totals[6], totals[7]
    k0, k1, k2, k3 = keeps[g], keeps[g + 1], keeps[g + 2], keeps[g + 3]
    k4, k5, k6, k7 = keeps[g + 4], keeps[g + 5], keeps[g + 6], keeps[g + 7]
    v0, v1, v2, v3 = invs[g], invs[g + 1], invs[g + 2], invs[g + 3]
    v4, v5, v6, v7 = invs[g + 4], invs[g + 5], invs[g + 6], invs[g + 7]
    a0, a1, a2, a3 = gains[g], gains[g + 1], gains[g + 2], gains[g + 3]
    a4, a5, a6, a7 = gains[g + 4], gains[g + 5], gains[g + 6], gains[g + 7]
    b0, b1, b2, b3 = losses[g], losses[g + 1], losses[g + 2], losses[g + 3]
    b4, b5, b6, b7 = losses[g + 4], losses[g + 5], losses[g + 6], losses[g + 7]
    prev = x[t0 - U1]
    for i in range(t0, t1):
        value = x[i]
        diff = value - prev
        prev = value
        up = 0.0 if diff < 0.0 else diff
        down = -diff if diff < 0.0 else 0.0
        k = i - t0
        a0 = (a0 * k0 + up) * v0
        b0 = (b0 * k0 + down) * v0
        o0[i] = a0
        q0[k] = a0 + b0
        a1 = (a1 * k1 + up) * v1
        b1 = (b1 * k1 + down) * v1
        o1[i] = a1
        q1[k] = a1 + b1
        a2 = (a2 * k2 + up) * v2
        b2 = (b2 * k2 + down) * v2
        o2[i] = a2
        q2[k] = a2 + b2
        a3 = (a3 * k3 + up) * v3
        b3 = (b3 * k3 + down) * v3
        o3[i] = a3
        q3[k] = a3 + b3
        a4 = (a4 * k4 + up) * v4
        b4 = (b4 * k4 + down) * v4
        o4[i] = a4
        q4[k] = a4 + b4
        a5 = (a5 * k5 + up) * v5
        b5 = (b5 * k5 + down) * v5
        o5[i] = a5
        q5[k] = a5 + b5
        a6 = (a6 * k6 + up) * v6
        b6 = (b6 * k6 + down) * v6
        o6[i] = a6
        q6[k] = a6 + b6
        a7 = (a7 * k7 + up) * v7
        b7 = (b7 * k7 + down) * v7
        o7[i] = a7
        q7[k] = a7 + b7
    gains[g], gains[g + 1], gains[g + 2], gains[g + 3] = a0, a1, a2, a3
    gains[g + 4], gains[g + 5], gains[g + 6], gains[g + 7] = a4, a5, a6, a7
    losses[g], losses[g + 1], losses[g + 2], losses[g + 3] = b0, b1, b2, b3
    losses[g + 4], losses[g + 5], losses[g + 6], losses[g + 7] = b4, b5, b6, b7


@njit(cache=True, nogil=True, inline="always")
def _rsi_avgs4_nb(
    x: np.ndarray,
    gains: np.ndarray,
    losses: np.ndarray,
    keeps: np.ndarray,
    invs: np.ndarray,
    g: int,
    out: np.ndarray,
    totals: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # _rsi_avgs8_nb for rows g..g+3.
    o0, o1, o2, o3 = out[g], out[g + 1], out[g + 2], out[g + 3]
    q0, q1, q2, q3 = totals[0], totals[1], totals[2], totals[3]
    k0, k1, k2, k3 = keeps[g], keeps[g + 1], keeps[g + 2], keeps[g + 3]
    v0, v1, v2, v3 = invs[g], invs[g + 1], invs[g + 2], invs[g + 3]
    a0, a1, a2, a3 = gains[g], gains[g + 1], gains[g + 2], gains[g + 3]
    b0, b1, b2, b3 = losses[g], losses[g + 1], losses[g + 2], losses[g + 3]
    prev = x[t0 - U1]
    for i in range(t0, t1):
        value = x[i]
        diff = value - prev
        prev = value
        up = 0.0 if diff < 0.0 else diff
        down = -diff if diff < 0.0 else 0.0
        k = i - t0
        a0 = (a0 * k0 + up) * v0
        b0 = (b0 * k0 + down) * v0
        o0[i] = a0
        q0[k] = a0 + b0
        a1 = (a1 * k1 + up) * v1
        b1 = (b1 * k1 + down) * v1
        o1[i] = a1
        q1[k] = a1 + b1
        a2 = (a2 * k2 + up) * v2
        b2 = (b2 * k2 + down) * v2
        o2[i] = a2
        q2[k] = a2 + b2
        a3 = (a3 * k3 + up) * v3
        b3 = (b3 * k3 + down) * v3
        o3[i] = a3
        q3[k] = a3 + b3
    gains[g], gains[g + 1], gains[g + 2], gains[g + 3] = a0, a1, a2, a3
    losses[g], losses[g + 1], losses[g + 2], losses[g + 3] = b0, b1, b2, b3


@njit(cache=True, nogil=True, inline="always")
def _rsi_avgs1_nb(
    x: np.ndarray,
    gains: np.ndarray,
    losses: np.ndarray,
    keeps: np.ndarray,
    invs: np.ndarray,
    r: int,
    out: np.ndarray,
    totals: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # _rsi_avgs8_nb for row r alone, its totals in ``totals``.
    o = out[r]
    kp = keeps[r]
    v = invs[r]
    a = gains[r]
    b = losses[r]
    prev = x[t0 - U1]
    for i in range(t0, t1):
        value = x[i]
        diff = value - prev
        prev = value
        up = 0.0 if diff < 0.0 else diff
        down = -diff if diff < 0.0 else 0.0
        a = (a * kp + up) * v
        b = (b * kp + down) * v
        o[i] = a
        totals[i - t0] = a + b
    gains[r] = a
    losses[r] = b


@njit(cache=True, nogil=True, error_model="numpy")
def _rsi_divide_nb(
    row: np.ndarray, totals: np.ndarray, t0: int | np.uint64, t1: int | np.uint64
) -> None:
    # row[i] = 100 * (gain / total) as rsi_core_nb, with the total at totals[i - t0]. The
    # quotient of a zero total is thrown away; numpy's error model lets it be computed (as
    # inf or NaN) instead of testing every divisor for zero, so the loop vectorizes.
    for i in range(t0, t1):
        total = totals[i - t0]
        q = 100.0 * (row[i] / total)
        row[i] = q if total > 0.0 else 0.0


@njit(cache=True, nogil=True)
def fastk_core_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    beg: int,
    period: int,
    out: np.ndarray,
    lowest_buf: np.ndarray,
) -> int:
    """Write the raw stochastic %K (TA-Lib's incremental highest/lowest); return the first index.

    ``lowest_buf`` (as long as ``close``) is scratch for the rolling lows: callers lend an output
    they fill later, because a fresh array costs more in page faults than %K costs to compute
    (3.2 ns per bar against 4.8 on 1M bars).
    """
    n = close.shape[0]
    start = beg + period - 1
    if start >= n:
        return n
    if not (block_max_nb(high, beg, period, out) or block_min_nb(low, beg, period, lowest_buf)):
        for i in range(np.uint64(start), np.uint64(n)):
            highest = out[i]
            lowest = lowest_buf[i]
            diff = highest - lowest
            # TA_IS_ZERO_SCALED(highest - lowest, |highest| + |lowest|), as ta_STOCH.c.
            if abs(diff) <= TA_EPSILON * (abs(highest) + abs(lowest)):
                out[i] = 0.0
            else:
                out[i] = (close[i] - lowest) / diff * 100.0
        return start
    trailing = beg
    lowest_idx = -1
    highest_idx = -1
    lowest = 0.0
    highest = 0.0
    diff = 0.0
    for today in range(start, n):
        value = low[today]
        if lowest_idx < trailing:
            lowest_idx = trailing
            lowest = low[lowest_idx]
            for i in range(lowest_idx + 1, today + 1):
                value = low[i]
                if value < lowest:
                    lowest_idx = i
                    lowest = value
            diff = highest - lowest
        elif value <= lowest:
            lowest_idx = today
            lowest = value
            diff = highest - lowest
        value = high[today]
        if highest_idx < trailing:
            highest_idx = trailing
            highest = high[highest_idx]
            for i in range(highest_idx + 1, today + 1):
                value = high[i]
                if value > highest:
                    highest_idx = i
                    highest = value
            diff = highest - lowest
        elif value >= highest:
            highest_idx = today
            highest = value
            diff = highest - lowest
        if abs(diff) <= TA_EPSILON * (abs(highest) + abs(lowest)):
            out[today] = 0.0
        else:
            out[today] = (close[today] - lowest) / diff * 100.0
        trailing += 1
    return start


@njit(cache=True, nogil=True)
def stoch_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    fastk_period: int,
    slowk_period: int,
    slowk_matype: int,
    slowd_period: int,
    slowd_matype: int,
    slowk: np.ndarray,
    slowd: np.ndarray,
) -> None:
    """Slow stochastic: %K smoothed by ``slowk_matype``, %D its ``slowd_matype`` average."""
    n = close.shape[0]
    beg = first_valid3_nb(high, low, close)
    start = (
        beg
        + fastk_period
        - 1
        + ma_lookback_nb(slowk_period, slowk_matype)
        + ma_lookback_nb(slowd_period, slowd_matype)
    )
    fill_nan_nb(slowk, start)
    fill_nan_nb(slowd, start)
    if start >= n:
        return
    # %K is written into slowd (with the rolling lows in slowk) and smoothed into slowk before
    # slowd is computed: no temporary arrays.
    s = fastk_core_nb(high, low, close, beg, fastk_period, slowd, slowk)
    s = ma_core_nb(slowd, s, slowk_period, slowk_matype, slowk)
    ma_core_nb(slowk, s, slowd_period, slowd_matype, slowd)
    fill_nan_nb(slowk, start)
    fill_nan_nb(slowd, start)


@njit(cache=True, nogil=True)
def stochf_core_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    beg: int,
    fastk_period: int,
    fastd_period: int,
    fastd_matype: int,
    fastk: np.ndarray,
    fastd: np.ndarray,
) -> int:
    """Write fast %K and %D; return the first index where both are defined."""
    n = close.shape[0]
    start = beg + fastk_period - 1 + ma_lookback_nb(fastd_period, fastd_matype)
    if start >= n:
        return n
    s = fastk_core_nb(high, low, close, beg, fastk_period, fastk, fastd)
    ma_core_nb(fastk, s, fastd_period, fastd_matype, fastd)
    return start


@njit(cache=True, nogil=True)
def stochrsi_nb(
    x: np.ndarray,
    period: int,
    fastk_period: int,
    fastd_period: int,
    fastd_matype: int,
    fastk: np.ndarray,
    fastd: np.ndarray,
) -> None:
    """Stochastic RSI: the fast stochastic of RSI(``period``)."""
    n = x.shape[0]
    beg = first_valid_nb(x)
    start = beg + period + fastk_period - 1 + ma_lookback_nb(fastd_period, fastd_matype)
    fill_nan_nb(fastk, start)
    fill_nan_nb(fastd, start)
    if start >= n:
        return
    rsi = np.empty(n)
    s = rsi_core_nb(x, beg, period, rsi)
    stochf_core_nb(rsi, rsi, rsi, s, fastk_period, fastd_period, fastd_matype, fastk, fastd)
    fill_nan_nb(fastk, start)
    fill_nan_nb(fastd, start)


@njit(cache=True, nogil=True)
def willr_nb(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, out: np.ndarray
) -> None:
    """Williams' %R into ``out`` (between -100 and 0)."""
    n = close.shape[0]
    beg = first_valid3_nb(high, low, close)
    start = beg + period - 1
    fill_nan_nb(out, start)
    if start >= n:
        return
    # Rolling lows into ``out``, then the rolling highs a tile at a time into a small buffer
    # (block_max_nb over the tile's bars and the period - 1 before them) and %R from both. A
    # second array as long as the input came from fresh pages whenever malloc had just given
    # its heap back, which made the first calls of a process several times slower.
    # Tiles are whole blocks of ``period`` bars from ``beg``, so the rolling highs keep the block
    # layout of a single pass, which decides TA-Lib's result around an embedded NaN.
    tile = -(-max(WILLR_TILE, 2 * period) // period) * period
    highs = np.empty(tile + period - 1)
    block_min_nb(low, beg, period, out)
    p1 = np.uint64(period - 1)
    t0 = np.uint64(start)
    un = np.uint64(n)
    while t0 < un:
        t1 = min(t0 + np.uint64(tile), un)
        block_max_nb(high[t0 - p1 : t1], 0, period, highs)
        _willr_tile_nb(highs, close, p1, t0, t1, out)
        t0 = t1
    fill_nan_nb(out, start)


# Bars of rolling highs held at a time by willr_nb (256 KiB, in L2 with the tile's lows).
WILLR_TILE = 32768


@njit(cache=True, nogil=True)
def _willr_tile_nb(
    highs: np.ndarray,
    close: np.ndarray,
    p1: np.uint64,
    t0: np.uint64,
    t1: np.uint64,
    out: np.ndarray,
) -> None:
    # out[i] = %R from the rolling high highs[i - t0 + p1] and the rolling low out[i], held in
    # [-100, 0] as TA-Lib 0.8 holds it: a close outside its bar's range (bad data, or a high or
    # low skipped as NaN) would leave it. A range within TA_IS_ZERO_SCALED(highest - lowest,
    # |highest| + |lowest|) of zero reads 0.0, as STOCH's does.
    for i in range(t0, t1):
        highest = highs[i - t0 + p1]
        lowest = out[i]
        diff = highest - lowest
        flat = abs(diff) <= TA_EPSILON * (abs(highest) + abs(lowest))
        value = 0.0 if flat else (highest - close[i]) / diff * -100.0
        if value > 0.0:
            value = 0.0
        elif value < -100.0:
            value = -100.0
        out[i] = value


@njit(cache=True, nogil=True)
def cci_nb(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, out: np.ndarray
) -> None:
    """Commodity channel index into ``out`` (TA-Lib's circular buffer order of summation)."""
    n = close.shape[0]
    beg = first_valid3_nb(high, low, close)
    start = beg + period - 1
    fill_nan_nb(out, start)
    if start >= n:
        return
    buf = np.empty(period)
    idx = U0
    up = np.uint64(period)
    for i in range(beg, start):
        buf[idx] = (high[i] + low[i] + close[i]) / 3.0
        idx += U1
    for i in range(np.uint64(start), np.uint64(n)):
        last = (high[i] + low[i] + close[i]) / 3.0
        buf[idx] = last
        average = 0.0
        for j in range(period):
            average += buf[j]
        average /= period
        dev = 0.0
        for j in range(period):
            dev += abs(buf[j] - average)
        value = last - average
        dev /= period
        # TA_IS_ZERO_SCALED of the deviation from the mean and of the mean deviation, both
        # against |average| (ta_CCI.c).
        tol = TA_EPSILON * abs(average)
        if not (abs(value) <= tol or dev <= tol):
            out[i] = value / (0.015 * dev)
        else:
            out[i] = 0.0
        idx += U1
        if idx == up:
            idx = U0


@njit(cache=True, nogil=True)
def mfi_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    period: int,
    out: np.ndarray,
) -> None:
    """Money flow index into ``out`` (0 while the window's money flow is below 1, as TA-Lib)."""
    n = close.shape[0]
    beg = first_valid4_nb(high, low, close, volume)
    start = beg + period
    fill_nan_nb(out, start)
    if start >= n:
        return
    pos_buf = np.zeros(period)
    neg_buf = np.zeros(period)
    idx = U0
    up = np.uint64(period)
    pos_sum = 0.0
    neg_sum = 0.0
    prev = (high[beg] + low[beg] + close[beg]) / 3.0
    for today in range(beg + 1, start + 1):
        tp = (high[today] + low[today] + close[today]) / 3.0
        diff = tp - prev
        # Typical prices that differ by rounding only count as unchanged: TA-Lib 0.8's
        # TA_IS_ZERO_SCALED(tp - prev, |tp| + |prev|) (ta_MFI.c).
        tol = TA_EPSILON * (abs(tp) + abs(prev))
        prev = tp
        flow = tp * volume[today]
        if diff < -tol:
            neg_buf[idx] = flow
            neg_sum += flow
            pos_buf[idx] = 0.0
        elif diff > tol:
            pos_buf[idx] = flow
            pos_sum += flow
            neg_buf[idx] = 0.0
        elif diff == diff:
            pos_buf[idx] = 0.0
            neg_buf[idx] = 0.0
        else:
            # A NaN price poisons both sums for good, as in TA-Lib.
            pos_buf[idx] = flow
            neg_buf[idx] = flow
            pos_sum += flow
            neg_sum += flow
        idx += U1
        if idx == up:
            idx = U0
    total = pos_sum + neg_sum
    out[start] = 0.0 if total <= 0.0 else 100.0 * (pos_sum / total)
    # TA-Lib 0.8 zeroes both running sums once the whole window holds no money flow, so the
    # rounding residue of a flat stretch does not leak into the bars after it. The window is
    # empty when the last ``period`` bars each put nothing into it: count them as a run.
    null_run = 0
    for j in range(period):
        k = (idx + np.uint64(j)) % up
        null_run = null_run + 1 if (pos_buf[k] == 0.0 and neg_buf[k] == 0.0) else 0
    for today in range(np.uint64(start) + U1, np.uint64(n)):
        pos_sum -= pos_buf[idx]
        neg_sum -= neg_buf[idx]
        tp = (high[today] + low[today] + close[today]) / 3.0
        diff = tp - prev
        # The same three cases without a branch on the direction of the move, a coin flip that
        # mispredicted on about every other bar (adding +0.0 leaves a sum as it is). Typical
        # prices that differ by rounding only count as unchanged (TA-Lib 0.8's scaled zero
        # test, as above); a NaN fails both comparisons and poisons both sums for good, as in
        # TA-Lib.
        tol = TA_EPSILON * (abs(tp) + abs(prev))
        prev = tp
        flow = tp * volume[today]
        pos_flow = 0.0 if diff <= tol else flow
        neg_flow = 0.0 if diff >= -tol else flow
        pos_buf[idx] = pos_flow
        neg_buf[idx] = neg_flow
        pos_sum += pos_flow
        neg_sum += neg_flow
        # Both flows are zero exactly when there was no volume or no move; bitwise ``&`` and
        # ``|`` keep LLVM from threading a branch through the selects above.
        flat = (diff <= tol) & (diff >= -tol)
        null_run = (null_run + 1) if (flat | (flow == 0.0)) else 0
        if null_run >= period:
            pos_sum = 0.0
            neg_sum = 0.0
        # Subtracting the flows that leave the window can leave a sum a hair below zero.
        pos = 0.0 if pos_sum < 0.0 else pos_sum
        neg = 0.0 if neg_sum < 0.0 else neg_sum
        total = pos + neg
        out[today] = 0.0 if total <= 0.0 else 100.0 * (pos / total)
        idx += U1
        if idx == up:
            idx = U0


@njit(cache=True, nogil=True)
def roc_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Rate of change in percent, ``(x / x[-period] - 1) * 100``, into ``out``."""
    n = x.shape[0]
    beg = first_valid_nb(x)
    start = beg + period
    fill_nan_nb(out, start)
    p = np.uint64(period)
    for i in range(np.uint64(start), np.uint64(n)):
        prev = x[i - p]
        out[i] = (x[i] / prev - 1.0) * 100.0 if prev != 0.0 else 0.0


@njit(cache=True, nogil=True)
def mom_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Momentum ``x - x[-period]`` into ``out``."""
    n = x.shape[0]
    beg = first_valid_nb(x)
    start = beg + period
    fill_nan_nb(out, start)
    p = np.uint64(period)
    for i in range(np.uint64(start), np.uint64(n)):
        out[i] = x[i] - x[i - p]


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


@njit(cache=True, nogil=True, inline="always")
def _by_period_nb(v: float, p: float, rp: float) -> float:
    # v / p correctly rounded, from rp = RN(1 / p) (Markstein): q = v * rp is within an ulp,
    # the first fma gives the exact residual v - q * p, the second rounds q + residual * rp.
    # A subnormal quotient can fall exactly halfway between two neighbours (even p), where
    # the residual's tiny error decides the rounding instead of ties-to-even: divide there.
    # Sums that small come after thousands of bars without movement one way; the branch is
    # predicted and adds nothing to the chain otherwise.
    q = v * rp
    if abs(q) < _TINY:
        return v / p
    return fma_nb(fma_nb(-q, p, v), rp, q)


# Twice the smallest normal double: below it _by_period_nb's quotient may be subnormal.
_TINY = 2.0**-1021


@njit(cache=True, nogil=True)
def dm_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    period: int,
    plus_di: np.ndarray,
    minus_di: np.ndarray,
    adx: np.ndarray,
    want_adx: bool,
    store_plus: bool = True,
    store_minus: bool = True,
) -> None:
    """Wilder's directional movement: +DI, -DI and (when ``want_adx``) ADX into the buffers.

    +DI and -DI start at ``period``; ADX at ``2 * period - 1``. For ``period == 1`` the DIs are
    the raw one-bar movement over the true range, as TA-Lib. A DI buffer that is not stored
    (``store_plus`` / ``store_minus`` False) may be empty.
    """
    n = close.shape[0]
    beg = first_valid3_nb(high, low, close)
    di_start = beg + period
    if store_plus:
        fill_nan_nb(plus_di, di_start)
    if store_minus:
        fill_nan_nb(minus_di, di_start)
    adx_start = beg + 2 * period - 1
    if want_adx:
        fill_nan_nb(adx, adx_start)
    if di_start >= n:
        return
    if period == 1:
        for today in range(beg + 1, n):
            diff_p = high[today] - high[today - 1]
            diff_m = low[today - 1] - low[today]
            tr = _true_range(high[today], low[today], close[today - 1])
            plus = diff_p if diff_p > 0 and diff_p > diff_m else 0.0
            minus = diff_m if diff_m > 0 and diff_m > diff_p else 0.0
            if not (tr > 0.0):
                plus, minus = 0.0, 0.0
            else:
                plus, minus = plus / tr, minus / tr
            if store_plus:
                plus_di[today] = plus
            if store_minus:
                minus_di[today] = minus
        return
    prev_plus = 0.0
    prev_minus = 0.0
    prev_tr = 0.0
    today = beg
    prev_high = high[today]
    prev_low = low[today]
    prev_close = close[today]
    for _ in range(period - 1):
        today += 1
        value = high[today]
        diff_p = value - prev_high
        prev_high = value
        value = low[today]
        diff_m = prev_low - value
        prev_low = value
        if diff_m > 0 and diff_p < diff_m:
            prev_minus += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            prev_plus += diff_p
        prev_tr += _true_range(prev_high, prev_low, prev_close)
        prev_close = close[today]
    sum_dx = 0.0
    prev_adx = 0.0
    uadx_start = np.uint64(adx_start)
    inv_keep = float(period - 1)
    # The running sums lose a period-th each bar: the quotient as _by_period_nb computes it,
    # the same bits as a division, shortens the loop-carried chains (a multiplication and two
    # fma against a division) and leaves the divider to the DIs. The movement is added
    # without a branch: the direction of a bar's move is a coin flip that mispredicted on
    # about every other bar, and adding +0.0 leaves a non-negative sum's bits as they are.
    # Only the two changes together made +DI faster (either alone gained nothing).
    fp = float(period)
    rp = 1.0 / fp
    for t in range(np.uint64(today) + U1, np.uint64(n)):
        value = high[t]
        diff_p = value - prev_high
        prev_high = value
        value = low[t]
        diff_m = prev_low - value
        prev_low = value
        take_m = (diff_m > 0) & (diff_p < diff_m)
        take_p = (diff_p > 0) & (diff_p > diff_m) & ~take_m
        prev_minus = prev_minus - _by_period_nb(prev_minus, fp, rp) + (diff_m if take_m else 0.0)
        prev_plus = prev_plus - _by_period_nb(prev_plus, fp, rp) + (diff_p if take_p else 0.0)
        tr = _true_range(prev_high, prev_low, prev_close)
        prev_tr = prev_tr - _by_period_nb(prev_tr, fp, rp) + tr
        prev_close = close[t]
        # A NaN range counts as zero, as TA-Lib 0.8: the DIs read 0 and the ADX holds.
        if not (prev_tr > 0.0):
            if store_plus:
                plus_di[t] = 0.0
            if store_minus:
                minus_di[t] = 0.0
            if want_adx:
                if t == uadx_start:
                    prev_adx = sum_dx / period
                if t >= uadx_start:
                    adx[t] = prev_adx
            continue
        if not want_adx:
            if store_plus:
                plus_di[t] = 100.0 * (prev_plus / prev_tr)
            if store_minus:
                minus_di[t] = 100.0 * (prev_minus / prev_tr)
            continue
        mdi = 100.0 * (prev_minus / prev_tr)
        pdi = 100.0 * (prev_plus / prev_tr)
        if store_plus:
            plus_di[t] = pdi
        if store_minus:
            minus_di[t] = mdi
        total = mdi + pdi
        nonzero = not (-EPSILON < total < EPSILON)
        if t <= uadx_start:
            if nonzero:
                sum_dx += 100.0 * (abs(mdi - pdi) / total)
            if t == uadx_start:
                prev_adx = sum_dx / period
                adx[t] = prev_adx
            continue
        if nonzero:
            dx = 100.0 * (abs(mdi - pdi) / total)
            prev_adx = (prev_adx * inv_keep + dx) / period
        adx[t] = prev_adx
