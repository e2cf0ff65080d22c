"""Helpers shared by the kernels: the first valid bar, NaN prefixes, TA-Lib's zero tests."""

import numpy as np
from numba import njit

# TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG thresholds (ta_utility.h).
EPSILON = 0.00000001

# Hot loops index with unsigned integers: numba wraps negative signed indices around (x[-1] is the
# last element), and that per-access check keeps LLVM from vectorizing simple loops (several
# times slower on MOM; benchmarks/indicators.py). Unsigned arithmetic must stay unsigned:
# mixing uint64 and int64 in numba gives float64.
U0 = np.uint64(0)

# TA-Lib 0.8's TA_EPSILON. Its scale-aware zero test TA_IS_ZERO_SCALED(v, scale) is
# ``fabs(v) <= TA_EPSILON * scale`` (ta_utility.h): a difference counts as zero within 1e-14 of
# the magnitude of the values it came from, so a flat stretch's rounding residue reads flat while
# prices of 1e-7 still compute. Each kernel passes TA-Lib's own ``scale`` (STOCH and WILLR:
# |highest| + |lowest|; MFI: |tp| + |previous tp|; CCI: |average|) and keeps the multiply-compare
# form, so the boundary falls on the same ulp as TA-Lib's.
TA_EPSILON = 1e-14
U1 = np.uint64(1)


@njit(cache=True, nogil=True)
def first_valid_nb(x: np.ndarray) -> int:
    """Return the first index where ``x`` is not NaN (``len(x) - 1`` when all are, as TA-Lib)."""
    n = x.shape[0]
    for i in range(n):
        if x[i] == x[i]:
            return i
    return n - 1 if n > 0 else 0


@njit(cache=True, nogil=True)
def first_valid2_nb(a: np.ndarray, b: np.ndarray) -> int:
    """Return the first index where both inputs are not NaN (TA-Lib's ``check_begidx2``)."""
    n = a.shape[0]
    for i in range(n):
        if a[i] == a[i] and b[i] == b[i]:
            return i
    return n - 1 if n > 0 else 0


@njit(cache=True, nogil=True)
def first_valid3_nb(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> int:
    """Return the first index where all three inputs are not NaN."""
    n = a.shape[0]
    for i in range(n):
        if a[i] == a[i] and b[i] == b[i] and c[i] == c[i]:
            return i
    return n - 1 if n > 0 else 0


@njit(cache=True, nogil=True)
def first_valid4_nb(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> int:
    """Return the first index where all four inputs are not NaN."""
    n = a.shape[0]
    for i in range(n):
        if a[i] == a[i] and b[i] == b[i] and c[i] == c[i] and d[i] == d[i]:
            return i
    return n - 1 if n > 0 else 0


@njit(cache=True, nogil=True)
def fill_nan_nb(out: np.ndarray, stop: int) -> None:
    """Write NaN into ``out[:stop]`` (clipped to the array)."""
    m = min(stop, out.shape[0])
    for i in range(m):
        out[i] = np.nan


@njit(cache=True, nogil=True)
def block_max_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> bool:
    """Write into ``out[i]`` the maximum of ``x[i-period+1 : i+1]`` for ``i >= beg+period-1``.

    van Herk / Gil-Werman, as TA-Lib 0.8's MAX: in blocks of ``period`` bars from ``beg``, a
    window is the suffix maximum of one block joined with the prefix maximum of the next, so each
    bar costs three comparisons whatever the data (rescanning when the maximum leaves the window
    costs O(period) per bar on falling prices). A window that is exactly one block takes that
    block's suffix maximum. ``out[beg : beg+period-1]`` is left holding prefix maxima.

    NaN compares false both ways, so TA-Lib's result with an embedded NaN follows its comparison
    order: a scan keeps a NaN it starts from (a block's first bar for the prefix, its last for
    the suffix) and skips one met later; joining the two keeps the suffix unless the prefix is
    greater. These lines keep that order. Returns whether ``x[beg:]`` holds a NaN.
    """
    n = np.uint64(x.shape[0])
    p = np.uint64(period)
    first = np.uint64(beg)
    tmp = np.empty(period)
    nan = False
    b = first
    while b < n:
        e = min(b + p, n)
        m = x[b]
        out[b] = m
        nan |= m != m
        for i in range(b + U1, e):
            v = x[i]
            nan |= v != v
            m = v if v > m else m
            out[i] = m
        if b > first:
            s = x[b - U1]
            tmp[p - U1] = s
            for j in range(U1, p):
                k = p - U1 - j
                v = x[b - p + k]
                s = v if v > s else s
                tmp[k] = s
            out[b - U1] = s
            for i in range(b, min(e, b + p - U1)):
                t = tmp[i - b + U1]
                o = out[i]
                out[i] = o if o > t else t
        b = e
    if n > first and (n - first) % p == U0:
        # The last block is whole: its window is its suffix maximum too.
        s = x[n - U1]
        for j in range(U1, p):
            v = x[n - U1 - j]
            s = v if v > s else s
        out[n - U1] = s
    return nan


@njit(cache=True, nogil=True)
def block_min_nb(x: np.ndarray, beg: int, period: int, out: np.ndarray) -> bool:
    """Write rolling minima into ``out`` as :func:`block_max_nb` writes maxima."""
    n = np.uint64(x.shape[0])
    p = np.uint64(period)
    first = np.uint64(beg)
    tmp = np.empty(period)
    nan = False
    b = first
    while b < n:
        e = min(b + p, n)
        m = x[b]
        out[b] = m
        nan |= m != m
        for i in range(b + U1, e):
            v = x[i]
            nan |= v != v
            m = v if v < m else m
            out[i] = m
        if b > first:
            s = x[b - U1]
            tmp[p - U1] = s
            for j in range(U1, p):
                k = p - U1 - j
                v = x[b - p + k]
                s = v if v < s else s
                tmp[k] = s
            out[b - U1] = s
            for i in range(b, min(e, b + p - U1)):
                t = tmp[i - b + U1]
                o = out[i]
                out[i] = o if o < t else t
        b = e
    if n > first and (n - first) % p == U0:
        s = x[n - U1]
        for j in range(U1, p):
            v = x[n - U1 - j]
            s = v if v < s else s
        out[n - U1] = s
    return nan


@njit(cache=True, nogil=True)
def has_nan_nb(x: np.ndarray, beg: int) -> bool:
    """Return whether ``x[beg:]`` holds a NaN."""
    for i in range(np.uint64(beg), np.uint64(x.shape[0])):
        if x[i] != x[i]:
            return True
    return False
