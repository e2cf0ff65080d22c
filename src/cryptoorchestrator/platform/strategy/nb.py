"""Numba kernels of the strategy layer: bar validation (numpy and numba only)."""

from __future__ import annotations

import numpy as np
from numba import njit

#: Problem codes returned by :func:`check_bars_nb`, in the order they are checked.
BAD_TIMESTAMP_ORDER, BAD_PRICE, BAD_VOLUME, BAD_HIGH_LOW = 1, 2, 3, 4


@njit(cache=True, nogil=True)
def check_bars_nb(
    timestamp: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out_rows: np.ndarray,
) -> tuple[int, int]:
    """Return ``(problem, n_found)`` for the first kind of problem found, rows in ``out_rows``.

    One pass over all columns; ``problem`` is 0 when the bars are valid.  Up to
    ``len(out_rows)`` offending row indices of that kind are written to ``out_rows``.
    """
    n = close.shape[0]
    cap = out_rows.shape[0]
    found = np.zeros(5, dtype=np.int64)
    # fast pass: branch-free counts (bitwise & and | do not short-circuit); NaN fails every
    # comparison, so "x > 0 and x < inf" rejects NaN, inf and non-positive values at once
    n_ts = 0
    n_px = 0
    n_vol = 0
    n_hl = 0
    for i in range(1, n):
        n_ts += timestamp[i] <= timestamp[i - 1]
    for i in range(n):
        o = open_[i]
        h = high[i]
        lo = low[i]
        c = close[i]
        v = volume[i]
        good = (o > 0.0) & (o < np.inf) & (h > 0.0) & (h < np.inf) & (lo > 0.0) & (lo < np.inf)
        good = good & (c > 0.0) & (c < np.inf)
        n_px += not good
        n_vol += not ((v >= 0.0) & (v < np.inf))
        n_hl += h < lo
    found[BAD_TIMESTAMP_ORDER] = n_ts
    found[BAD_PRICE] = n_px
    found[BAD_VOLUME] = n_vol
    found[BAD_HIGH_LOW] = n_hl
    for code in (BAD_TIMESTAMP_ORDER, BAD_PRICE, BAD_VOLUME, BAD_HIGH_LOW):
        if found[code] > 0:
            m = 0
            # slow pass, only on bad data: collect the first offending rows of this kind
            for i in range(n):
                if m >= cap:
                    break
                o = open_[i]
                h = high[i]
                lo = low[i]
                c = close[i]
                if code == BAD_TIMESTAMP_ORDER:
                    bad = i > 0 and timestamp[i] <= timestamp[i - 1]
                elif code == BAD_PRICE:
                    bad = not (o > 0.0 and h > 0.0 and lo > 0.0 and c > 0.0) or not (
                        o < np.inf and h < np.inf and lo < np.inf and c < np.inf
                    )
                elif code == BAD_VOLUME:
                    bad = not (volume[i] >= 0.0 and volume[i] < np.inf)
                else:
                    bad = h < lo
                if bad:
                    out_rows[m] = i
                    m += 1
            return code, int(found[code])
    return 0, 0
