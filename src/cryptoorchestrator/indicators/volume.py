"""On-balance volume and volume-weighted average prices (rolling and session-anchored)."""

from __future__ import annotations

import numpy as np

from cryptoorchestrator.indicators import _validate as v
from cryptoorchestrator.indicators.nb import volume as nb

_SESSIONS_MS = {
    "1h": 3_600_000,
    "4h": 14_400_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "1w": 604_800_000,
}
# 1970-01-01 was a Thursday: weekly sessions start on Monday 00:00 UTC.
_WEEK_OFFSET_MS = 4 * 86_400_000


def obv(real: np.ndarray, volume: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return on-balance volume, starting from the first bar's volume as TA-Lib."""
    x = v.as_series(real, "real")
    vol = v.as_series(volume, "volume")
    v.same_length(real=x, volume=vol)
    result = v.output(out, x.shape, inputs={"real": x, "volume": vol})
    nb.obv_nb(x, vol, result)
    return result


def vwap(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    timeperiod: int = 14,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the rolling VWAP of the typical price ``(high+low+close)/3`` over ``timeperiod``.

    NaN during the first ``timeperiod - 1`` bars and for windows without volume. For a VWAP that
    restarts every session (day, week, ...), use :func:`session_vwap`.
    """
    h, lo, c, vol = _hlcv(high, low, close, volume)
    p = v.period(timeperiod, "timeperiod", 1)
    result = v.output(out, c.shape, inputs=v.hlcv(h, lo, c, vol))
    nb.vwap_rolling_nb(h, lo, c, vol, p, result)
    return result


def session_vwap(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    timestamps: np.ndarray,
    session: str | int = "1d",
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return the VWAP anchored at the start of each session, from int64 ms UTC timestamps.

    Parameters
    ----------
    high, low, close, volume
        Bars; NaN bars are skipped (they add nothing to the session's sums).
    timestamps
        Candle open times in milliseconds since the epoch, UTC (int64).
    session
        ``"1h"``, ``"4h"``, ``"8h"``, ``"12h"``, ``"1d"`` (midnight UTC), ``"1w"`` (Monday
        00:00 UTC), or a session length in milliseconds.
    out
        Optional float64 output buffer.

    Returns
    -------
    numpy.ndarray
        Cumulative ``sum(tp * volume) / sum(volume)`` since the session began (NaN until the
        session has volume).
    """
    h, lo, c, vol = _hlcv(high, low, close, volume)
    ts = np.asarray(timestamps)
    if ts.dtype.kind not in "iu" or ts.ndim != 1:
        raise v.IndicatorInputError(
            "timestamps",
            f"got {ts.dtype} of shape {ts.shape}",
            allowed="a 1-D int64 array of epoch milliseconds",
        )
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    v.same_length(close=c, timestamps=ts)
    if isinstance(session, str):
        if session not in _SESSIONS_MS:
            raise v.IndicatorInputError(
                "session", f"{session!r} is not known", allowed=", ".join(_SESSIONS_MS)
            )
        length = _SESSIONS_MS[session]
        offset = _WEEK_OFFSET_MS if session == "1w" else 0
    else:
        length = v.period(session, "session", 1, 2**62)
        offset = 0
    result = v.output(out, c.shape, inputs={**v.hlcv(h, lo, c, vol), "timestamps": ts})
    nb.vwap_session_nb(h, lo, c, vol, ts, length, offset, result)
    return result


def _hlcv(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> tuple[np.ndarray, ...]:
    h = v.as_series(high, "high")
    lo = v.as_series(low, "low")
    c = v.as_series(close, "close")
    vol = v.as_series(volume, "volume")
    v.same_length(high=h, low=lo, close=c, volume=vol)
    return h, lo, c, vol
