"""Bar timestamps: their unit, and how many bars make a year.

The platform keeps candle open times as int64 milliseconds since the Unix epoch (UTC). Data comes
in seconds, milliseconds, microseconds or nanoseconds, and nothing in an integer says which, so
:func:`timestamps_to_ms` reads the unit from the magnitude: real candles fall between 1990 and
2100, and those 110 years occupy disjoint ranges in the four units (a factor 1000 apart, each
range spanning a factor 6.5). Anything else (bar numbers, 1970-based offsets) is refused rather
than guessed.

Annualisation is 24/7 (crypto trades every day of the year): :func:`annualisation` derives the
bars per year from the timeframe or from the bars' own spacing, and refuses when it has neither,
instead of assuming one-minute bars.
"""

from __future__ import annotations

import numpy as np

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.timeframe import (
    TIMEFRAMES,
    periods_per_year,
    timeframe_to_ms,
)

#: Plausible candle times, [1990-01-01, 2100-01-01) UTC, in milliseconds since the epoch.
FIRST_MS = 631_152_000_000
END_MS = 4_102_444_800_000

#: Units a timestamp column may be in, with how many of them make one millisecond.
UNITS_PER_MS: dict[str, float] = {"s": 1e-3, "ms": 1.0, "us": 1e3, "ns": 1e6}

_YEAR_MS = 365 * 86_400_000
# Bars read to measure the spacing: enough for a robust median, bounded for long series.
_SPACING_SAMPLE = 10_001


def timestamp_unit(values: np.ndarray) -> str | None:
    """Return the unit (``"s"``, ``"ms"``, ``"us"``, ``"ns"``) in which all ``values`` are dates.

    Dates means 1990-01-01 to 2100-01-01 UTC; ``None`` when no unit makes every value one (or
    there are no values). NaN is never a date.
    """
    if values.shape[0] == 0:
        return None
    lo = float(np.min(values))
    hi = float(np.max(values))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    for unit, per_ms in UNITS_PER_MS.items():
        if FIRST_MS * per_ms <= lo and hi < END_MS * per_ms:
            return unit
    return None


def timestamps_to_ms(values: np.ndarray, *, field: str = "bars.timestamp") -> np.ndarray:
    """Return candle times as contiguous int64 ms, converting from s, us or ns by magnitude.

    ``values`` may be integers, floats (fractions of a second are rounded to the nearest ms) or
    ``datetime64`` of any unit.

    Raises
    ------
    InvalidInputError
        Naming ``field``: missing values, a non-numeric dtype, or values that are dates between
        1990 and 2100 in none of the four units.
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise InvalidInputError(
                field,
                "missing values (NaT)",
                allowed="dates",
                rows=np.flatnonzero(np.isnat(arr)).tolist(),
            )
        return np.ascontiguousarray(arr.astype("datetime64[ms]").astype(np.int64))
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:
        raise InvalidInputError(
            field,
            f"unsupported dtype {arr.dtype} of shape {arr.shape}",
            allowed="1-D epoch timestamps in s, ms, us or ns, or datetime64",
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInputError(
            field,
            "missing values",
            allowed="finite epoch timestamps",
            rows=np.flatnonzero(~np.isfinite(arr)).tolist(),
        )
    if arr.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    allowed = (
        "epoch timestamps (s, ms, us or ns) or datetime64; without timestamps, leave the "
        "column out and pass timeframe"
    )
    # The unit is the one in which the middle bar (the median, once sorted as bars must be) is a
    # date; rows that are not dates in it are named (a stray 0 among candles is bad data).
    mid = arr.shape[0] // 2
    unit = timestamp_unit(arr[mid : mid + 1])
    if unit is None:
        raise InvalidInputError(
            field,
            f"values {np.min(arr)} .. {np.max(arr)} are not dates between 1990 and 2100 in "
            "seconds, milliseconds, microseconds or nanoseconds since the Unix epoch",
            allowed=allowed,
        )
    per_ms = UNITS_PER_MS[unit]
    outside = (arr < FIRST_MS * per_ms) | (arr >= END_MS * per_ms)
    if outside.any():
        raise InvalidInputError(
            field,
            f"{int(outside.sum())} values are not dates between 1990 and 2100 in {unit} "
            "(the unit of the others)",
            allowed=allowed,
            rows=np.flatnonzero(outside).tolist(),
        )
    if arr.dtype.kind == "f":
        return np.ascontiguousarray(np.rint(arr / UNITS_PER_MS[unit]), dtype=np.int64)
    ints = arr.astype(np.int64, copy=False)
    if unit == "ms":
        return np.ascontiguousarray(ints)
    if unit == "s":
        return np.ascontiguousarray(ints * 1000)
    return np.ascontiguousarray(ints // int(UNITS_PER_MS[unit]))


def bar_spacing_ms(timestamp: np.ndarray) -> float | None:
    """Return the median spacing of the first bars, in the timestamps' unit (None below 2)."""
    if timestamp.shape[0] < 2:
        return None
    return float(np.median(np.diff(timestamp[:_SPACING_SAMPLE])))


def annualisation(
    timestamp: np.ndarray, timeframe: str | None, *, field: str = "timeframe"
) -> float:
    """Return the number of bars in a year (365 days) for annualising per-bar statistics.

    With ``timeframe`` it is the timeframe's, after checking that ms-dated bars are spaced by it
    (median spacing); without, it comes from the bars' median spacing, which needs at least two
    bars with ms dates (as :func:`timestamps_to_ms` returns them).

    Raises
    ------
    InvalidInputError
        Naming ``field`` (``timeframe``) with the allowed timeframes when the bars have no
        usable timestamps and no timeframe is given, or when the timeframe contradicts the
        spacing; naming ``bars.timestamp`` when the timestamps are not in ms.
    """
    step = bar_spacing_ms(timestamp)
    dated = timestamp_unit(timestamp) == "ms"
    if timeframe is not None:
        tf_ms = timeframe_to_ms(timeframe, field=field)
        if dated and step is not None and step != tf_ms:
            raise InvalidInputError(
                field,
                f"{timeframe!r} is {tf_ms} ms but the bars are {step:g} ms apart (median)",
                allowed=_matching(step) or TIMEFRAMES,
            )
        return periods_per_year(timeframe)
    unit = timestamp_unit(timestamp)
    if unit not in (None, "ms"):
        raise InvalidInputError(
            "bars.timestamp",
            f"timestamps look like {unit} since the epoch; the platform keeps ms",
            allowed="int64 ms since the epoch (as as_bars and bars_to_arrays convert them)",
        )
    if not dated or step is None or step <= 0:
        reason = (
            "cannot measure the bar interval from fewer than 2 bars"
            if dated
            else "the bars carry no timestamps to measure the bar interval from"
        )
        raise InvalidInputError(
            field,
            f"{reason}; pass the timeframe (annualised metrics depend on it)",
            allowed=TIMEFRAMES,
        )
    return _YEAR_MS / step


def _matching(step: float) -> str | None:
    for tf in TIMEFRAMES:
        if timeframe_to_ms(tf) == step:
            return tf
    return None
