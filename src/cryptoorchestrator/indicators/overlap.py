"""Moving averages, Bollinger Bands and MACD, named and parameterised like TA-Lib's functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cryptoorchestrator.indicators import _validate as v
from cryptoorchestrator.indicators.nb import overlap as nb


def sma(real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the simple moving average of ``real`` over ``timeperiod`` bars.

    Parameters
    ----------
    real
        Input series (converted once to contiguous float64).
    timeperiod
        Window length, 1..100000.
    out
        Optional preallocated float64 buffer of the same length, filled and returned.

    Returns
    -------
    numpy.ndarray
        The average, NaN during the first ``timeperiod - 1`` bars (after any leading NaN).
    """
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.sma_nb(x, p, result)
    return result


def ema(real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the exponential moving average (``k = 2/(timeperiod+1)``, seeded with the SMA)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.ema_nb(x, p, result)
    return result


def wma(real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the linearly weighted moving average (weights 1..timeperiod, newest heaviest)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.wma_nb(x, p, result)
    return result


def dema(real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the double exponential moving average ``2*EMA - EMA(EMA)``."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.dema_nb(x, p, result)
    return result


def tema(real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the triple exponential moving average ``3*E1 - 3*E2 + E3``."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.tema_nb(x, p, result)
    return result


def trima(real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the triangular moving average (an SMA of an SMA, weights peaking mid-window)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.trima_nb(x, p, result)
    return result


def kama(real: np.ndarray, timeperiod: int = 30, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return Kaufman's adaptive moving average (efficiency ratio over ``timeperiod`` bars)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.kama_nb(x, p, result)
    return result


def ma(
    real: np.ndarray, timeperiod: int = 30, matype: int = 0, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Return the moving average of type ``matype`` (0 SMA, 1 EMA, 2 WMA, 3 DEMA, 4 TEMA,
    5 TRIMA, 6 KAMA), as TA-Lib's ``MA``."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    t = v.matype(matype, "matype")
    result = v.output(out, x.shape, inputs={"real": x})
    nb.ma_nb(x, p, t, result)
    return result


def bbands(
    real: np.ndarray,
    timeperiod: int = 20,
    nbdevup: float = 2.0,
    nbdevdn: float = 2.0,
    matype: int = 0,
    *,
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return Bollinger Bands ``(upper, middle, lower)``.

    The middle band is the ``matype`` moving average; the others add and subtract ``nbdevup`` and
    ``nbdevdn`` population standard deviations of the last ``timeperiod`` bars. The default
    period is 20, as the installed TA-Lib's Python signature.
    """
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 2)
    up = v.number(nbdevup, "nbdevup")
    dn = v.number(nbdevdn, "nbdevdn")
    t = v.matype(matype, "matype")
    upper, middle, lower = v.outputs(out, 3, x.shape[0], inputs={"real": x})
    nb.bbands_nb(x, p, up, dn, t, upper, middle, lower)
    return upper, middle, lower


def macd(
    real: np.ndarray,
    fastperiod: int = 12,
    slowperiod: int = 26,
    signalperiod: int = 9,
    *,
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(macd, signal, hist)`` with TA-Lib's alignment.

    Both EMAs are seeded at bar ``slowperiod - 1`` (the fast one with the mean of its last
    ``fastperiod`` bars), so all three outputs start at ``slowperiod + signalperiod - 2``. The
    periods are swapped if ``slowperiod < fastperiod``, as TA-Lib does.
    """
    x = v.as_series(real, "real")
    fast = v.period(fastperiod, "fastperiod", 2)
    slow = v.period(slowperiod, "slowperiod", 2)
    signal = v.period(signalperiod, "signalperiod", 1)
    m, s, h = v.outputs(out, 3, x.shape[0], inputs={"real": x})
    nb.macd_nb(x, fast, slow, signal, m, s, h)
    return m, s, h


def sma_batch(
    close: np.ndarray, periods: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """Return the SMA for several periods, computed in one pass over ``close``.

    Parameters
    ----------
    close
        Input series.
    periods
        Window lengths, each 1..100000.
    out
        Optional float64 buffer of shape ``(len(periods), len(close))``.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(periods), len(close))``; row ``r`` is bit-identical to
        ``sma(close, periods[r])``.
    """
    x = v.as_series(close, "close")
    ps = v.periods(periods, "periods", 1)
    result = v.output(out, (ps.shape[0], x.shape[0]), inputs={"close": x})
    nb.sma_batch_nb(x, ps, result)
    return result


def ema_batch(
    close: np.ndarray, periods: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """Return the EMA for several periods in one pass; row ``r`` equals ``ema(close, p_r)``."""
    x = v.as_series(close, "close")
    ps = v.periods(periods, "periods", 1)
    result = v.output(out, (ps.shape[0], x.shape[0]), inputs={"close": x})
    nb.ema_batch_nb(x, ps, result)
    for r in range(ps.shape[0]):
        if ps[r] == 1:
            # TA-Lib's EMA(1) is the input itself; the recurrence would only round to it.
            nb.ema_nb(x, 1, result[r])
    return result
