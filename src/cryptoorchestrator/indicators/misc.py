"""Rolling extremes, parabolic SAR and crossing signals."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cryptoorchestrator.indicators import _validate as v
from cryptoorchestrator.indicators.nb import misc as nb


def rolling_max(
    real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return the highest value of the last ``timeperiod`` bars (TA-Lib's ``MAX``)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.rolling_extreme_nb(x, p, True, result)
    return result


def rolling_min(
    real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return the lowest value of the last ``timeperiod`` bars (TA-Lib's ``MIN``)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, x.shape, inputs={"real": x})
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
    result = v.output(out, h.shape, inputs={"high": h, "low": lo})
    nb.sar_nb(h, lo, acc, mx, result)
    return result


def crossed_above(
    a: np.ndarray, b: np.ndarray | float, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return a boolean array: True where ``a`` is above ``b`` now and was not on the bar before.

    ``b`` may be a series of the same length or a number (a threshold such as 70 for RSI).
    Comparisons with NaN are False, so no cross is reported during a lookback.  ``out``, a
    writeable C-contiguous bool array of ``a``'s length, is filled and returned instead of a new
    array (a sweep reuses one buffer for every trial).
    """
    x, y = _pair(a, b)
    result = _bool_output(out, x.shape[0], "out", {"a": x, "b": y})
    nb.crossed_nb(x, y, True, result)
    return result


def crossed_below(
    a: np.ndarray, b: np.ndarray | float, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return a boolean array: True where ``a`` is below ``b`` now and was not on the bar before.

    ``b`` and ``out`` as in :func:`crossed_above`.
    """
    x, y = _pair(a, b)
    result = _bool_output(out, x.shape[0], "out", {"a": x, "b": y})
    nb.crossed_nb(x, y, False, result)
    return result


def crossings(
    a: np.ndarray,
    b: np.ndarray | float,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(crossed_above(a, b), crossed_below(a, b))``, computed in one pass.

    Equal to the two calls bit for bit, at about the cost of one: the inputs are read once.
    ``out`` is a pair of bool buffers as :func:`crossed_above`'s ``out``.
    """
    x, y = _pair(a, b)
    n = x.shape[0]
    if out is None:
        above, below = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)
    elif not isinstance(out, tuple | list) or len(out) != 2:
        raise v.IndicatorInputError(
            "out", "expected 2 arrays", allowed="a tuple of 2 bool arrays or None"
        )
    else:
        inputs = {"a": x, "b": y}
        above = _bool_output(out[0], n, "out[0]", inputs)
        below = _bool_output(out[1], n, "out[1]", inputs)
        if np.shares_memory(above, below):
            raise v.IndicatorInputError(
                "out", "the two buffers overlap", allowed="two separate bool arrays"
            )
    nb.crossings_nb(x, y, above, below)
    return above, below


def _bool_output(
    out: np.ndarray | None, n: int, name: str, inputs: Mapping[str, np.ndarray]
) -> np.ndarray:
    if out is None:
        return np.empty(n, dtype=np.bool_)
    if not isinstance(out, np.ndarray):
        raise v.IndicatorInputError(name, "must be a numpy array", allowed="numpy.ndarray or None")
    if out.dtype != np.bool_ or out.shape != (n,):
        raise v.IndicatorInputError(
            name, f"got {out.dtype} of shape {out.shape}", allowed=f"a bool array of shape ({n},)"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise v.IndicatorInputError(
            name, "must be C-contiguous and writeable", allowed="a fresh np.empty buffer"
        )
    v.separate(out, name, inputs)
    return out


def _pair(a: np.ndarray, b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    x = v.as_series(a, "a")
    if np.ndim(b) == 0:
        y = np.full(x.shape[0], v.number(b, "b"))
    else:
        y = v.as_series(b, "b")
        v.same_length(a=x, b=y)
    return x, y
