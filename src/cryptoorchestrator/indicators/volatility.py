"""True range, ATR and NATR, named and parameterised like TA-Lib's functions."""

from __future__ import annotations

import numpy as np

from cryptoorchestrator.indicators import _validate as v
from cryptoorchestrator.indicators.nb import volatility as nb


def _hlc(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, ...]:
    h = v.as_series(high, "high")
    lo = v.as_series(low, "low")
    c = v.as_series(close, "close")
    v.same_length(high=h, low=lo, close=c)
    return h, lo, c


def trange(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return the true range ``max(high, prev close) - min(low, prev close)`` from bar 1."""
    h, lo, c = _hlc(high, low, close)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.trange_nb(h, lo, c, result)
    return result


def atr(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return Wilder's average true range, first value at bar ``timeperiod``."""
    h, lo, c = _hlc(high, low, close)
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.atr_nb(h, lo, c, p, result)
    return result


def natr(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the normalized ATR, ``100 * ATR / close``."""
    h, lo, c = _hlc(high, low, close)
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.natr_nb(h, lo, c, p, result)
    return result
