"""Momentum oscillators, named and parameterised like TA-Lib's functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cryptoorchestrator.indicators import _validate as v
from cryptoorchestrator.indicators.nb import momentum as nb

# Stands in for the directional-movement outputs a caller did not ask for (never written).
_EMPTY = np.empty(0)


def _hlc(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, ...]:
    h = v.as_series(high, "high")
    lo = v.as_series(low, "low")
    c = v.as_series(close, "close")
    v.same_length(high=h, low=lo, close=c)
    return h, lo, c


def rsi(real: np.ndarray, timeperiod: int = 14, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return Wilder's relative strength index (0..100), first value at bar ``timeperiod``."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.rsi_nb(x, p, result)
    return result


def rsi_batch(
    close: np.ndarray, periods: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """Return RSI for several periods in one pass; row ``r`` equals ``rsi(close, periods[r])``."""
    x = v.as_series(close, "close")
    ps = v.periods(periods, "periods", 2)
    result = v.output(out, (ps.shape[0], x.shape[0]), inputs={"close": x})
    nb.rsi_batch_nb(x, ps, result)
    return result


def stoch(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    fastk_period: int = 5,
    slowk_period: int = 3,
    slowk_matype: int = 0,
    slowd_period: int = 3,
    slowd_matype: int = 0,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the slow stochastic ``(slowk, slowd)``, both within 0..100."""
    h, lo, c = _hlc(high, low, close)
    fk = v.period(fastk_period, "fastk_period", 1)
    sk = v.period(slowk_period, "slowk_period", 1)
    skt = v.matype(slowk_matype, "slowk_matype")
    sd = v.period(slowd_period, "slowd_period", 1)
    sdt = v.matype(slowd_matype, "slowd_matype")
    k, d = v.outputs(out, 2, c.shape[0], inputs=v.hlcv(h, lo, c))
    nb.stoch_nb(h, lo, c, fk, sk, skt, sd, sdt, k, d)
    return k, d


def stochrsi(
    real: np.ndarray,
    timeperiod: int = 14,
    fastk_period: int = 5,
    fastd_period: int = 3,
    fastd_matype: int = 0,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the stochastic RSI ``(fastk, fastd)``: the fast stochastic of RSI(timeperiod)."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 2)
    fk = v.period(fastk_period, "fastk_period", 1)
    fd = v.period(fastd_period, "fastd_period", 1)
    fdt = v.matype(fastd_matype, "fastd_matype")
    k, d = v.outputs(out, 2, x.shape[0], inputs={"real": x})
    nb.stochrsi_nb(x, p, fk, fd, fdt, k, d)
    return k, d


def willr(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return Williams' %R (-100..0) over ``timeperiod`` bars."""
    h, lo, c = _hlc(high, low, close)
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.willr_nb(h, lo, c, p, result)
    return result


def cci(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the commodity channel index of the typical price over ``timeperiod`` bars."""
    h, lo, c = _hlc(high, low, close)
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.cci_nb(h, lo, c, p, result)
    return result


def mfi(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the money flow index (0..100) over ``timeperiod`` bars."""
    h, lo, c = _hlc(high, low, close)
    vol = v.as_series(volume, "volume")
    v.same_length(close=c, volume=vol)
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c, vol))
    nb.mfi_nb(h, lo, c, vol, p, result)
    return result


def roc(real: np.ndarray, timeperiod: int = 10, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the rate of change in percent, ``(real / real[-timeperiod] - 1) * 100``."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.roc_nb(x, p, result)
    return result


def mom(real: np.ndarray, timeperiod: int = 10, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return the momentum ``real - real[-timeperiod]``."""
    x = v.as_series(real, "real")
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, x.shape, inputs={"real": x})
    nb.mom_nb(x, p, result)
    return result


def adx(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return Wilder's average directional index, first value at bar ``2*timeperiod - 1``."""
    h, lo, c = _hlc(high, low, close)
    p = v.period(timeperiod, "timeperiod", 2)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.dm_nb(h, lo, c, p, _EMPTY, _EMPTY, result, True, False, False)
    return result


def plus_di(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the plus directional indicator +DI (0..100)."""
    h, lo, c = _hlc(high, low, close)
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.dm_nb(h, lo, c, p, result, _EMPTY, _EMPTY, False, True, False)
    return result


def minus_di(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the minus directional indicator -DI (0..100)."""
    h, lo, c = _hlc(high, low, close)
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c))
    nb.dm_nb(h, lo, c, p, _EMPTY, result, _EMPTY, False, False, True)
    return result
