"""Helpers shared by the kernels: the first valid bar, NaN prefixes, TA-Lib's zero tests."""

import numpy as np
from numba import njit

# TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG thresholds (ta_utility.h).
EPSILON = 0.00000001


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
