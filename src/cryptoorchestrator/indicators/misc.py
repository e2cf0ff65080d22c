"""Rolling extremes, parabolic SAR and crossing signals."""

from __future__ import annotations

import numpy as np

from cryptoorchestrator.indicators import _validate as v
from cryptoorchestrator.indicators.nb import misc as nb


def rolling_max(
    real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return the highest value of the last ``timeperiod`` bars (TA-Lib's ``MAX``)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, x.shape)
    nb.rolling_extreme_nb(x, p, True, result)
    return result


def rolling_min(
    real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return the lowest value of the last ``timeperiod`` bars (TA-Lib's ``MIN``)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, x.shape)
    nb.rolling_extreme_nb(x, p, False, result)
    return result


def sar(
    high: np.ndarray,
    low: np.ndarray,
    acceleration: float = 0.02,
    maximum: float = 0.2,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return Wilder's parabolic stop-and-reverse, first value at bar 1."""
    h = v.as_series(high, "high")
    lo = v.as_series(low, "low")
    v.same_length(high=h, low=lo)
    acc = v.number(acceleration, "acceleration", 0.0)
    mx = v.number(maximum, "maximum", 0.0)
    result = v.output(out, h.shape)
    nb.sar_nb(h, lo, acc, mx, result)
    return result


def crossed_above(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """Return a boolean array: True where ``a`` is above ``b`` now and was not on the bar before.

    ``b`` may be a series of the same length or a number (a threshold such as 70 for RSI).
    Comparisons with NaN are False, so no cross is reported during a lookback.
    """
    x, y = _pair(a, b)
    result = np.empty(x.shape[0], dtype=np.bool_)
    nb.crossed_nb(x, y, True, result)
    return result


def crossed_below(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """Return a boolean array: True where ``a`` is below ``b`` now and was not on the bar before."""
    x, y = _pair(a, b)
    result = np.empty(x.shape[0], dtype=np.bool_)
    nb.crossed_nb(x, y, False, result)
    return result


def _pair(a: np.ndarray, b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    x = v.as_series(a, "a")
    if np.ndim(b) == 0:
        y = np.full(x.shape[0], v.number(b, "b"))
    else:
        y = v.as_series(b, "b")
        v.same_length(a=x, b=y)
    return x, y
