"""Candle timeframes as exchanges name them (``1m``, ``4h``, ``1d``) and their length."""

from __future__ import annotations

from cryptoorchestrator.platform.errors import InvalidInputError

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

#: Timeframes the platform accepts, shortest first (Binance's list).
TIMEFRAMES: tuple[str, ...] = tuple("1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w".split())


def timeframe_to_ms(timeframe: str, *, field: str = "timeframe") -> int:
    """Return the length of one candle of ``timeframe`` in milliseconds.

    Raises
    ------
    InvalidInputError
        If the timeframe is not one of :data:`TIMEFRAMES`.
    """
    if timeframe not in TIMEFRAMES:
        raise InvalidInputError(field, f"unknown timeframe {timeframe!r}", allowed=TIMEFRAMES)
    return int(timeframe[:-1]) * _UNIT_MS[timeframe[-1]]


def periods_per_year(timeframe: str) -> float:
    """Return how many candles of ``timeframe`` fit in a year (crypto trades 365 days)."""
    return 365 * 86_400_000 / timeframe_to_ms(timeframe)
