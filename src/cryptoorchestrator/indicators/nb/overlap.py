"""Moving averages, Bollinger Bands and MACD as numba kernels, operation for operation as TA-Lib.

Each ``*_core_nb`` function follows TA-Lib's internal routine: it reads ``x`` from index ``beg``
(the first valid bar), writes ``out`` from the first full window on and returns that index;
it never touches ``out`` before it. The public ``*_nb`` kernels add TA-Lib's NaN prefix. The order
of additions and the single roundings (``fma_nb``) are TA-Lib's, so results are bit-identical.
"""

import math

import numpy as np
from numba import njit

from cryptoorchestrator.indicators.nb.common import U1, fill_nan_nb, first_valid_nb
from cryptoorchestrator.indicators.nb.fma import fma_nb

MA_SMA = 0
MA_EMA = 1
MA_WMA = 2
MA_DEMA = 3
MA_TEMA = 4
MA_TRIMA = 5
MA_KAMA = 6


@njit(cache=True, nogil=True)
def sma_core_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> int:
    """Write the simple moving average from ``x[beg:]``; return the first output index."""
    n = x.shape[0]
    start = beg + period - 1
    if start >= n:
        return n
    total = 0.0
    for i in range(beg, start):
        total += x[i]
    trailing = np.uint64(beg)
    for i in range(np.uint64(start), np.uint64(n)):
        total += x[i]
        value = total
        total -= x[trailing]
        trailing += U1
        out[i] = value / period
    return start


@njit(cache=True, nogil=True)
def ema_core_nb(x: np.ndarray, beg: int, period: int, k: float, out: np.ndarray) -> int:
    """Write the EMA seeded with the mean of the first ``period`` bars; return the first index."""
    n = x.shape[0]
    start = beg + period - 1
    if start >= n:
        return n
    total = 0.0
    for i in range(beg, start + 1):
        total += x[i]
    prev = total / period
    out[start] = prev
    for i in range(start + 1, n):
        prev = fma_nb(x[i] - prev, k, prev)
        out[i] = prev
    return start


@njit(cache=True, nogil=True)
def wma_core_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> int:
    """Write the linearly weighted moving average; return the first output index."""
    n = x.shape[0]
    start = beg + period - 1
    if start >= n:
        return n
    if period == 1:
        for i in range(start, n):
            out[i] = x[i]
        return start
    divider = float((period * (period + 1)) >> 1)
    period_sub = 0.0
    period_sum = 0.0
    weight = 1
    for i in range(beg, start):
        value = x[i]
        period_sub += value
        period_sum += value * weight
        weight += 1
    trailing_value = 0.0
    trailing = np.uint64(beg)
    up = np.uint64(period)
    # TA-Lib 0.8 rebuilds both running sums from the window every 8 * period outputs so that
    # their rounding drift stays bounded; doing the same keeps the outputs bit-identical.
    anchor = 8 * period
    countdown = anchor - 1
    for i in range(np.uint64(start), np.uint64(n)):
        if countdown == 0:
            countdown = anchor
            period_sub = 0.0
            period_sum = 0.0
            weight = 1
            for j in range(i + U1 - up, i):
                value = x[j]
                period_sub += value
                period_sum += value * weight
                weight += 1
            trailing_value = 0.0
        countdown -= 1
        value = x[i]
        period_sub += value
        period_sub -= trailing_value
        period_sum += value * period
        trailing_value = x[trailing]
        trailing += U1
        out[i] = period_sum / divider
        period_sum -= period_sub
    return start


@njit(cache=True, nogil=True)
def trima_core_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> int:
    """Write the triangular moving average (TA-Lib's incremental form); return the first index."""
    n = x.shape[0]
    start = beg + period - 1
    if start >= n:
        return n
    half = period >> 1
    odd = period % 2 == 1
    if odd:
        factor = 1.0 / float((half + 1) * (half + 1))
        middle = beg + half
    else:
        factor = 1.0 / float(half * (half + 1))
        middle = beg + half - 1
    today = middle + half
    trailing = beg
    numerator = 0.0
    numerator_sub = 0.0
    for i in range(middle, trailing - 1, -1):
        numerator_sub += x[i]
        numerator += numerator_sub
    numerator_add = 0.0
    middle += 1
    for i in range(middle, today + 1):
        numerator_add += x[i]
        numerator += numerator_add
    value = x[trailing]
    trailing += 1
    out[start] = numerator * factor
    today += 1
    o = np.uint64(start) + U1
    umiddle = np.uint64(middle)
    utrailing = np.uint64(trailing)
    for utoday in range(np.uint64(today), np.uint64(n)):
        numerator -= numerator_sub
        numerator_sub -= value
        value = x[umiddle]
        umiddle += U1
        numerator_sub += value
        if odd:
            numerator += numerator_add
            numerator_add -= value
        else:
            numerator_add -= value
            numerator += numerator_add
        value = x[utoday]
        numerator_add += value
        numerator += value
        value = x[utrailing]
        utrailing += U1
        out[o] = numerator * factor
        o += U1
    return start


@njit(cache=True, nogil=True)
def kama_core_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> int:
    """Write Kaufman's adaptive moving average; return the first output index."""
    n = x.shape[0]
    start = beg + period
    if start >= n:
        return n
    const_max = 2.0 / (30.0 + 1.0)
    const_diff = 2.0 / (2.0 + 1.0) - const_max
    sum_roc = 0.0
    today = beg
    trailing = beg
    # Count of non-zero terms in the running sum of |changes|: when the window holds none, the
    # sum is set to exactly zero (TA-Lib 0.8), so a flat stretch leaves no rounding residue.
    nonzero = 0
    for _ in range(period):
        diff = x[today]
        today += 1
        diff -= x[today]
        sum_roc += abs(diff)
        if diff != 0.0:
            nonzero += 1
    prev = x[today - 1]
    value = x[today]
    value2 = x[trailing]
    trailing += 1
    period_roc = value - value2
    trailing_value = value2
    if sum_roc <= abs(period_roc):
        ratio = 1.0
    else:
        ratio = abs(period_roc / sum_roc)
    sc = fma_nb(ratio, const_diff, const_max)
    sc *= sc
    prev = fma_nb(x[today] - prev, sc, prev)
    today += 1
    out[start] = prev
    utrailing = np.uint64(trailing)
    for utoday in range(np.uint64(today), np.uint64(n)):
        value = x[utoday]
        value2 = x[utrailing]
        utrailing += U1
        period_roc = value - value2
        leaving = abs(trailing_value - value2)
        entering = abs(value - x[utoday - U1])
        sum_roc -= leaving
        sum_roc += entering
        # The count only moves when a zero change enters or leaves; testing that first keeps
        # the reset a rarely taken branch instead of a select on the running sum's dependency
        # chain.
        if entering == 0.0 or leaving == 0.0:
            nonzero += (entering != 0.0) - (leaving != 0.0)
            if nonzero == 0:
                sum_roc = 0.0
        trailing_value = value2
        if sum_roc <= abs(period_roc):
            ratio = 1.0
        else:
            ratio = abs(period_roc / sum_roc)
        sc = fma_nb(ratio, const_diff, const_max)
        sc *= sc
        prev = fma_nb(value - prev, sc, prev)
        out[utoday] = prev
    return start


@njit(cache=True, nogil=True)
def dema_core_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> int:
    """Write the double EMA ``2*e1 - e2``; return the first output index.

    Both EMAs advance in one loop (e2 seeded with the mean of e1's first ``period`` values, as
    TA-Lib): the two dependency chains overlap and no intermediate array is allocated.
    """
    n = x.shape[0]
    k = 2.0 / (period + 1)
    s1 = beg + period - 1
    s2 = s1 + period - 1
    if s2 >= n:
        return n
    total = 0.0
    for i in range(beg, s1 + 1):
        total += x[i]
    e1 = total / period
    total = e1
    for i in range(s1 + 1, s2 + 1):
        e1 = fma_nb(x[i] - e1, k, e1)
        total += e1
    e2 = total / period
    out[s2] = 2.0 * e1 - e2
    for i in range(np.uint64(s2) + U1, np.uint64(n)):
        e1 = fma_nb(x[i] - e1, k, e1)
        e2 = fma_nb(e1 - e2, k, e2)
        out[i] = 2.0 * e1 - e2
    return s2


@njit(cache=True, nogil=True)
def tema_core_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> int:
    """Write the triple EMA ``3*e1 - 3*e2 + e3`` in one fused loop; return the first index."""
    n = x.shape[0]
    k = 2.0 / (period + 1)
    s1 = beg + period - 1
    s2 = s1 + period - 1
    s3 = s2 + period - 1
    if s3 >= n:
        return n
    total = 0.0
    for i in range(beg, s1 + 1):
        total += x[i]
    e1 = total / period
    total = e1
    for i in range(s1 + 1, s2 + 1):
        e1 = fma_nb(x[i] - e1, k, e1)
        total += e1
    e2 = total / period
    total = e2
    for i in range(s2 + 1, s3 + 1):
        e1 = fma_nb(x[i] - e1, k, e1)
        e2 = fma_nb(e1 - e2, k, e2)
        total += e2
    e3 = total / period
    out[s3] = 3.0 * e1 - 3.0 * e2 + e3
    for i in range(np.uint64(s3) + U1, np.uint64(n)):
        e1 = fma_nb(x[i] - e1, k, e1)
        e2 = fma_nb(e1 - e2, k, e2)
        e3 = fma_nb(e2 - e3, k, e3)
        out[i] = 3.0 * e1 - 3.0 * e2 + e3
    return s3


@njit(cache=True, nogil=True)
def ma_core_nb(x: np.ndarray, beg: int, period: int, matype: int, out: np.ndarray) -> int:
    """Dispatch to the moving average ``matype`` (TA-Lib's TA_MA, types 0-6).

    As TA_MA, period 1 copies the input (a NaN stays where it is), whereas TA-Lib's own SMA(1)
    and TRIMA(1) run their running sums, which carry a NaN forward: ``sma_nb`` and ``trima_nb``
    call their cores directly for that reason.
    """
    if period == 1:
        for i in range(beg, x.shape[0]):
            out[i] = x[i]
        return beg
    if matype == MA_SMA:
        return sma_core_nb(x, beg, period, out)
    if matype == MA_EMA:
        return ema_core_nb(x, beg, period, 2.0 / (period + 1), out)
    if matype == MA_WMA:
        return wma_core_nb(x, beg, period, out)
    if matype == MA_DEMA:
        return dema_core_nb(x, beg, period, out)
    if matype == MA_TEMA:
        return tema_core_nb(x, beg, period, out)
    if matype == MA_TRIMA:
        return trima_core_nb(x, beg, period, out)
    return kama_core_nb(x, beg, period, out)


@njit(cache=True, nogil=True)
def ma_lookback_nb(period: int, matype: int) -> int:
    """Return TA-Lib's lookback of the moving average ``matype``."""
    if period == 1:
        return 0
    if matype == MA_DEMA:
        return 2 * (period - 1)
    if matype == MA_TEMA:
        return 3 * (period - 1)
    if matype == MA_KAMA:
        return period
    return period - 1


@njit(cache=True, nogil=True)
def sma_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Simple moving average into ``out`` (NaN during the lookback)."""
    start = sma_core_nb(x, first_valid_nb(x), period, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def ema_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Exponential moving average, ``k = 2/(period+1)``, into ``out``."""
    start = ma_core_nb(x, first_valid_nb(x), period, MA_EMA, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def wma_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Weighted moving average into ``out``."""
    start = ma_core_nb(x, first_valid_nb(x), period, MA_WMA, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def trima_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Triangular moving average into ``out``."""
    start = trima_core_nb(x, first_valid_nb(x), period, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def kama_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Kaufman adaptive moving average into ``out``."""
    start = ma_core_nb(x, first_valid_nb(x), period, MA_KAMA, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def dema_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Double exponential moving average into ``out``."""
    start = ma_core_nb(x, first_valid_nb(x), period, MA_DEMA, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def tema_nb(x: np.ndarray, period: int, out: np.ndarray) -> None:
    """Triple exponential moving average into ``out``."""
    start = ma_core_nb(x, first_valid_nb(x), period, MA_TEMA, out)
    fill_nan_nb(out, start)


@njit(cache=True, nogil=True)
def ma_nb(x: np.ndarray, period: int, matype: int, out: np.ndarray) -> None:
    """Moving average of type ``matype`` (0-6) into ``out``."""
    start = ma_core_nb(x, first_valid_nb(x), period, matype, out)
    fill_nan_nb(out, start)


# TA-Lib 0.8's variance (ta_VAR.c, and the SMA path of ta_BBANDS.c, which fuses it with the
# middle band): running sums of ``x - shift`` and ``(x - shift)**2`` over the window, with the
# shift first the window's first value, so that ``E[d**2] - E[d]**2`` subtracts quantities of the
# variance's size instead of the price's squared. The sums are rebuilt from the window, around its
# mean, when the variance has cancelled below RESEED_COLLAPSE of the mean squared deviation, when
# the value just removed dwarfed the surviving sum by RESEED_OUTLIER (its rounding would swamp
# what is left), and at the latest every RESEED_WINDOWS * period bars. The constants, the order
# of operations and the absence of FMA are TA-Lib's: the outputs are bit-identical.
RESEED_WINDOWS = 32
RESEED_COLLAPSE = 0.000001
RESEED_OUTLIER = 1000000.0
# A rebuilt variance below this fraction of its mean squared deviation is rounding: it is zero.
VARIANCE_FLOOR = 0.000000000001


@njit(cache=True, nogil=True)
def _variance_rebuild_nb(
    x: np.ndarray, lo: int | np.uint64, hi: int | np.uint64, inv: float
) -> tuple[float, float, float, float]:
    # Rebuild around the mean of x[lo..hi]; return the new shift, the sums with x[lo] already
    # removed (as the running path leaves them) and the window's variance, floored.
    total = 0.0
    for j in range(lo, hi + 1):
        total += x[j]
    shift = total * inv
    s1 = 0.0
    s2 = 0.0
    for j in range(lo, hi + 1):
        d = x[j] - shift
        s1 += d
        s2 += d * d
    mean = s1 * inv
    var = s2 * inv - mean * mean
    if var < VARIANCE_FLOOR * (s2 * inv):
        var = 0.0
    d = x[lo] - shift
    s1 -= d
    s2 -= d * d
    return shift, s1, s2, var


@njit(cache=True, nogil=True)
def variance_nb(x: np.ndarray, start: int, period: int, out: np.ndarray) -> None:
    """Write the population variance of the windows ending at ``start`` and later (TA_VAR).

    ``start`` is where TA-Lib enters the variance (for BBANDS, the first output of its moving
    average): the first shift and the rebuild schedule are counted from there.
    """
    n = x.shape[0]
    if start >= n:
        return
    inv = 1.0 / period
    lo = start - period + 1
    shift = x[lo]
    s1 = 0.0
    s2 = 0.0
    for j in range(lo, start):
        d = x[j] - shift
        s1 += d
        s2 += d * d
    anchor = RESEED_WINDOWS * period
    countdown = anchor
    up = np.uint64(period)
    for i in range(np.uint64(start), np.uint64(n)):
        d = x[i] - shift
        s1 += d
        s2 += d * d
        mean = s1 * inv
        var = s2 * inv - mean * mean
        d = x[i + U1 - up] - shift
        s1 -= d
        sq = d * d
        s2 -= sq
        countdown -= 1
        if var < RESEED_COLLAPSE * (s2 * inv) or sq > RESEED_OUTLIER * s2 or countdown <= 0:
            countdown = anchor
            shift, s1, s2, var = _variance_rebuild_nb(x, i + U1 - up, i, inv)
        out[i] = var


@njit(cache=True, nogil=True)
def bbands_nb(
    x: np.ndarray,
    period: int,
    nbdevup: float,
    nbdevdn: float,
    matype: int,
    upper: np.ndarray,
    middle: np.ndarray,
    lower: np.ndarray,
) -> None:
    """Bollinger Bands: moving average plus/minus population standard deviations."""
    n = x.shape[0]
    beg = first_valid_nb(x)
    if matype == MA_SMA:
        start = beg + period - 1
        fill_nan_nb(upper, start)
        fill_nan_nb(middle, start)
        fill_nan_nb(lower, start)
        if start < n:
            _bbands_sma_nb(x, beg, period, nbdevup, nbdevdn, upper, middle, lower)
        return
    start = ma_core_nb(x, beg, period, matype, middle)
    std_start = beg + period - 1
    if std_start > start:
        start = std_start
    fill_nan_nb(upper, start)
    fill_nan_nb(middle, start)
    fill_nan_nb(lower, start)
    if start >= n:
        return
    variance_nb(x, start, period, lower)
    same = nbdevup == nbdevdn
    for i in range(np.uint64(start), np.uint64(n)):
        mid = middle[i]
        upper[i], lower[i] = _bands_nb(math.sqrt(lower[i]), mid, nbdevup, nbdevdn, same)


@njit(cache=True, nogil=True, inline="always")
def _bands_nb(
    dev: float, mid: float, nbdevup: float, nbdevdn: float, same: bool
) -> tuple[float, float]:
    # TA-Lib's FMA build rounds ``mid + dev * nbdevup`` once. With equal multipliers it forms
    # ``dev * nbdev`` once and contracts both the sum and the difference; with different ones
    # its compiler contracts only the upper band (measured on every bar against ta-lib 0.8.2).
    if same:
        return fma_nb(dev, nbdevup, mid), fma_nb(-dev, nbdevup, mid)
    return fma_nb(dev, nbdevup, mid), mid - dev * nbdevdn


@njit(cache=True, nogil=True)
def _bbands_sma_nb(
    x: np.ndarray,
    beg: int,
    period: int,
    nbdevup: float,
    nbdevdn: float,
    upper: np.ndarray,
    middle: np.ndarray,
    lower: np.ndarray,
) -> None:
    # The SMA, the variance (as variance_nb) and the bands in one pass over the data, as
    # TA-Lib's fused SMA path: the two running sums do not interact, so the bits are those of
    # separate SMA and VAR passes.
    n = x.shape[0]
    start = beg + period - 1
    inv = 1.0 / period
    shift = x[beg]
    total = 0.0
    s1 = 0.0
    s2 = 0.0
    for j in range(beg, start):
        xj = x[j]
        total += xj
        d = xj - shift
        s1 += d
        s2 += d * d
    anchor = RESEED_WINDOWS * period
    countdown = anchor
    up = np.uint64(period)
    same = nbdevup == nbdevdn
    for i in range(np.uint64(start), np.uint64(n)):
        xi = x[i]
        total += xi
        d = xi - shift
        s1 += d
        s2 += d * d
        mean = s1 * inv
        var = s2 * inv - mean * mean
        mid = total / period
        x_old = x[i + U1 - up]
        total -= x_old
        d = x_old - shift
        s1 -= d
        sq = d * d
        s2 -= sq
        countdown -= 1
        if var < RESEED_COLLAPSE * (s2 * inv) or sq > RESEED_OUTLIER * s2 or countdown <= 0:
            countdown = anchor
            shift, s1, s2, var = _variance_rebuild_nb(x, i + U1 - up, i, inv)
        dev = math.sqrt(var) if var != 0.0 else 0.0
        middle[i] = mid
        upper[i], lower[i] = _bands_nb(dev, mid, nbdevup, nbdevdn, same)


@njit(cache=True, nogil=True)
def macd_nb(
    x: np.ndarray,
    fast: int,
    slow: int,
    signal: int,
    macd: np.ndarray,
    sig: np.ndarray,
    hist: np.ndarray,
) -> None:
    """MACD with TA-Lib's alignment: both EMAs seeded at ``slow - 1``, outputs from the signal's."""
    n = x.shape[0]
    if slow < fast:
        fast, slow = slow, fast
    beg = first_valid_nb(x)
    seed = beg + slow - 1
    start = seed + signal - 1
    fill_nan_nb(macd, start)
    fill_nan_nb(sig, start)
    fill_nan_nb(hist, start)
    if start >= n:
        return
    k_fast = 2.0 / (fast + 1)
    k_slow = 2.0 / (slow + 1)
    total = 0.0
    for i in range(beg, seed + 1):
        total += x[i]
    slow_ema = total / slow
    total = 0.0
    for i in range(seed - fast + 1, seed + 1):
        total += x[i]
    fast_ema = total / fast
    # The signal EMA's seed is the mean of the first ``signal`` MACD values: keep them in ``hist``.
    hist[seed] = fast_ema - slow_ema
    for i in range(seed + 1, start + 1):
        fast_ema = fma_nb(x[i] - fast_ema, k_fast, fast_ema)
        slow_ema = fma_nb(x[i] - slow_ema, k_slow, slow_ema)
        hist[i] = fast_ema - slow_ema
    total = 0.0
    for i in range(seed, start + 1):
        total += hist[i]
    sig_ema = total / signal
    k_sig = 2.0 / (signal + 1)
    m = hist[start]
    macd[start] = m
    sig[start] = sig_ema
    hist[start] = m - sig_ema
    for i in range(start + 1, n):
        fast_ema = fma_nb(x[i] - fast_ema, k_fast, fast_ema)
        slow_ema = fma_nb(x[i] - slow_ema, k_slow, slow_ema)
        m = fast_ema - slow_ema
        sig_ema = fma_nb(m - sig_ema, k_sig, sig_ema)
        macd[i] = m
        sig[i] = sig_ema
        hist[i] = m - sig_ema
    fill_nan_nb(hist, start)


@njit(cache=True, nogil=True)
def sma_batch_nb(x: np.ndarray, periods: np.ndarray, out: np.ndarray) -> None:
    """SMA for several periods in one pass; row ``r`` is bit-identical to ``sma_nb``.

    Rows advance in groups of 8 (then 4, then one at a time) with their running sums in
    registers: each sum is a chain of two dependent additions per bar, and eight such chains
    overlap in the CPU instead of running one after another as separate calls would.
    """
    n = x.shape[0]
    m = periods.shape[0]
    beg = first_valid_nb(x)
    totals = np.zeros(m)
    uperiods = np.empty(m, dtype=np.uint64)
    last_start = beg
    for r in range(m):
        start = beg + periods[r] - 1
        uperiods[r] = np.uint64(periods[r])
        last_start = max(last_start, start)
        fill_nan_nb(out[r], start)
    warm = min(last_start, n)
    for i in range(beg, warm):
        xi = x[i]
        for r in range(m):
            totals[r] += xi
            if i >= beg + periods[r] - 1:
                value = totals[r]
                totals[r] -= x[i - periods[r] + 1]
                out[r, i] = value / periods[r]
    un = np.uint64(n)
    uwarm = np.uint64(warm)
    g = 0
    while g + 8 <= m:
        _sma_rows8_nb(x, uperiods, totals, g, out, uwarm, un)
        g += 8
    if g + 4 <= m:
        _sma_rows4_nb(x, uperiods, totals, g, out, uwarm, un)
        g += 4
    for r in range(g, m):
        _sma_row_nb(x, uperiods[r], totals, r, out[r], uwarm, un)


@njit(cache=True, nogil=True, inline="always")
def _quotient_nb(v: float, f: float, r: float) -> float:
    # v / f from q = v * RN(1/f) corrected by two fma (Markstein): the correctly rounded
    # quotient for finite v. An infinite v makes the residual inf - inf = NaN where the division
    # gives v's infinity, which q already is (and a NaN v gives NaN either way), so a NaN
    # residual keeps q: the row then equals sma_nb after an inf in the input too.
    q = v * r
    e = fma_nb(-q, f, v)
    return fma_nb(e, r, q) if e == e else q


@njit(cache=True, nogil=True, inline="always")
def _sma_rows8_nb(
    x: np.ndarray,
    uperiods: np.ndarray,
    totals: np.ndarray,
    g: int,
    out: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # sma_core_nb for rows g..g+7 and bars t0..t1-1, carrying the totals: total + x[i] is the
    # window sum, then the oldest bar leaves. The sum divided by p is computed as v * RN(1/p)
    # corrected by two fma (Markstein): the correctly rounded quotient, as a division gives,
    # for two fma on the pipes the additions leave idle instead of a division per bar and row.
    o0, o1, o2, o3 = out[g], out[g + 1], out[g + 2], out[g + 3]
    o4, o5, o6, o7 = out[g + 4], out[g + 5], out[g + 6], out[g + 7]
    p0, p1, p2, p3 = uperiods[g], uperiods[g + 1], uperiods[g + 2], uperiods[g + 3]
    p4, p5, p6, p7 = uperiods[g + 4], uperiods[g + 5], uperiods[g + 6], uperiods[g + 7]
    f0, f1, f2, f3 = float(p0), float(p1), float(p2), float(p3)
    f4, f5, f6, f7 = float(p4), float(p5), float(p6), float(p7)
    r0, r1, r2, r3 = 1.0 / f0, 1.0 / f1, 1.0 / f2, 1.0 / f3
    r4, r5, r6, r7 = 1.0 / f4, 1.0 / f5, 1.0 / f6, 1.0 / f7
    s0, s1, s2, s3 = totals[g], totals[g + 1], totals[g + 2], totals[g + 3]
    s4, s5, s6, s7 = totals[g + 4], totals[g + 5], totals[g + 6], totals[g + 7]
    for i in range(t0, t1):
        xi = x[i]
        j = i + U1
        v = s0 + xi
        s0 = v - x[j - p0]
        o0[i] = _quotient_nb(v, f0, r0)
        v = s1 + xi
        s1 = v - x[j - p1]
        o1[i] = _quotient_nb(v, f1, r1)
        v = s2 + xi
        s2 = v - x[j - p2]
        o2[i] = _quotient_nb(v, f2, r2)
        v = s3 + xi
        s3 = v - x[j - p3]
        o3[i] = _quotient_nb(v, f3, r3)
        v = s4 + xi
        s4 = v - x[j - p4]
        o4[i] = _quotient_nb(v, f4, r4)
        v = s5 + xi
        s5 = v - x[j - p5]
        o5[i] = _quotient_nb(v, f5, r5)
        v = s6 + xi
        s6 = v - x[j - p6]
        o6[i] = _quotient_nb(v, f6, r6)
        v = s7 + xi
        s7 = v - x[j - p7]
        o7[i] = _quotient_nb(v, f7, r7)
    totals[g], totals[g + 1], totals[g + 2], totals[g + 3] = s0, s1, s2, s3
    totals[g + 4], totals[g + 5], totals[g + 6], totals[g + 7] = s4, s5, s6, s7


@njit(cache=True, nogil=True, inline="always")
def _sma_rows4_nb(
    x: np.ndarray,
    uperiods: np.ndarray,
    totals: np.ndarray,
    g: int,
    out: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # _sma_rows8_nb for rows g..g+3.
    o0, o1, o2, o3 = out[g], out[g + 1], out[g + 2], out[g + 3]
    p0, p1, p2, p3 = uperiods[g], uperiods[g + 1], uperiods[g + 2], uperiods[g + 3]
    f0, f1, f2, f3 = float(p0), float(p1), float(p2), float(p3)
    r0, r1, r2, r3 = 1.0 / f0, 1.0 / f1, 1.0 / f2, 1.0 / f3
    s0, s1, s2, s3 = totals[g], totals[g + 1], totals[g + 2], totals[g + 3]
    for i in range(t0, t1):
        xi = x[i]
        j = i + U1
        v = s0 + xi
        s0 = v - x[j - p0]
        o0[i] = _quotient_nb(v, f0, r0)
        v = s1 + xi
        s1 = v - x[j - p1]
        o1[i] = _quotient_nb(v, f1, r1)
        v = s2 + xi
        s2 = v - x[j - p2]
        o2[i] = _quotient_nb(v, f2, r2)
        v = s3 + xi
        s3 = v - x[j - p3]
        o3[i] = _quotient_nb(v, f3, r3)
    totals[g], totals[g + 1], totals[g + 2], totals[g + 3] = s0, s1, s2, s3


@njit(cache=True, nogil=True, inline="always")
def _sma_row_nb(
    x: np.ndarray,
    up: np.uint64,
    totals: np.ndarray,
    r: int,
    row: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # _sma_rows8_nb for row r alone.
    f = float(up)
    rp = 1.0 / f
    total = totals[r]
    for i in range(t0, t1):
        v = total + x[i]
        total = v - x[i + U1 - up]
        row[i] = _quotient_nb(v, f, rp)
    totals[r] = total


@njit(cache=True, nogil=True)
def ema_batch_nb(x: np.ndarray, periods: np.ndarray, out: np.ndarray) -> None:
    """EMA for several periods in one pass; row ``r`` is bit-identical to ``ema_nb``."""
    n = x.shape[0]
    m = periods.shape[0]
    beg = first_valid_nb(x)
    prev = np.zeros(m)
    ks = np.empty(m)
    starts = np.empty(m, dtype=np.int64)
    last_start = beg
    for r in range(m):
        p = periods[r]
        ks[r] = 2.0 / (p + 1)
        starts[r] = beg + p - 1
        last_start = max(last_start, starts[r])
        fill_nan_nb(out[r], starts[r])
    warm = min(last_start + 1, n)
    for i in range(beg, warm):
        xi = x[i]
        for r in range(m):
            s = starts[r]
            if i < s:
                prev[r] += xi
            elif i == s:
                prev[r] = (prev[r] + xi) / periods[r]
                out[r, i] = prev[r]
            else:
                prev[r] = fma_nb(xi - prev[r], ks[r], prev[r])
                out[r, i] = prev[r]
    # Rows in groups of 8 (then 4, then one at a time) with their EMAs in registers: each is a
    # chain of a subtraction and an fma per bar, and eight of them hide that latency. Held in
    # ``prev`` across bars, every step also waited for a store to be forwarded to the next load.
    un = np.uint64(n)
    uwarm = np.uint64(warm)
    g = 0
    while g + 8 <= m:
        _ema_rows8_nb(x, prev, ks, g, out, uwarm, un)
        g += 8
    if g + 4 <= m:
        _ema_rows4_nb(x, prev, ks, g, out, uwarm, un)
        g += 4
    for r in range(g, m):
        row = out[r]
        k = ks[r]
        v = prev[r]
        for i in range(uwarm, un):
            v = fma_nb(x[i] - v, k, v)
            row[i] = v


@njit(cache=True, nogil=True, inline="always")
def _ema_rows8_nb(
    x: np.ndarray,
    prev: np.ndarray,
    ks: np.ndarray,
    g: int,
    out: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # ema_core_nb's recurrence for rows g..g+7 and bars t0..t1-1.
    o0, o1, o2, o3 = out[g], out[g + 1], out[g + 2], out[g + 3]
    o4, o5, o6, o7 = out[g + 4], out[g + 5], out[g + 6], out[g + 7]
    k0, k1, k2, k3 = ks[g], ks[g + 1], ks[g + 2], ks[g + 3]
    k4, k5, k6, k7 = ks[g + 4], ks[g + 5], ks[g + 6], ks[g + 7]
    v0, v1, v2, v3 = prev[g], prev[g + 1], prev[g + 2], prev[g + 3]
    v4, v5, v6, v7 = prev[g + 4], prev[g + 5], prev[g + 6], prev[g + 7]
    for i in range(t0, t1):
        xi = x[i]
        v0 = fma_nb(xi - v0, k0, v0)
        o0[i] = v0
        v1 = fma_nb(xi - v1, k1, v1)
        o1[i] = v1
        v2 = fma_nb(xi - v2, k2, v2)
        o2[i] = v2
        v3 = fma_nb(xi - v3, k3, v3)
        o3[i] = v3
        v4 = fma_nb(xi - v4, k4, v4)
        o4[i] = v4
        v5 = fma_nb(xi - v5, k5, v5)
        o5[i] = v5
        v6 = fma_nb(xi - v6, k6, v6)
        o6[i] = v6
        v7 = fma_nb(xi - v7, k7, v7)
        o7[i] = v7
    prev[g], prev[g + 1], prev[g + 2], prev[g + 3] = v0, v1, v2, v3
    prev[g + 4], prev[g + 5], prev[g + 6], prev[g + 7] = v4, v5, v6, v7


@njit(cache=True, nogil=True, inline="always")
def _ema_rows4_nb(
    x: np.ndarray,
    prev: np.ndarray,
    ks: np.ndarray,
    g: int,
    out: np.ndarray,
    t0: int | np.uint64,
    t1: int | np.uint64,
) -> None:
    # _ema_rows8_nb for rows g..g+3.
    o0, o1, o2, o3 = out[g], out[g + 1], out[g + 2], out[g + 3]
    k0, k1, k2, k3 = ks[g], ks[g + 1], ks[g + 2], ks[g + 3]
    v0, v1, v2, v3 = prev[g], prev[g + 1], prev[g + 2], prev[g + 3]
    for i in range(t0, t1):
        xi = x[i]
        v0 = fma_nb(xi - v0, k0, v0)
        o0[i] = v0
        v1 = fma_nb(xi - v1, k1, v1)
        o1[i] = v1
        v2 = fma_nb(xi - v2, k2, v2)
        o2[i] = v2
        v3 = fma_nb(xi - v3, k3, v3)
        o3[i] = v3
    prev[g], prev[g + 1], prev[g + 2], prev[g + 3] = v0, v1, v2, v3
