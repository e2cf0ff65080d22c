"""Parse user-supplied instants (``'2024-01-01'``, ISO strings, datetimes, epoch ms) to UTC ms."""

from __future__ import annotations

from datetime import UTC, date, datetime

from cryptoorchestrator.platform.errors import InvalidInputError

TimeLike = str | int | datetime | date

_FORMAT_HELP = "YYYY-MM-DD, an ISO 8601 date-time, a datetime, or epoch milliseconds"


def to_ms(value: TimeLike, *, field: str = "time") -> int:
    """Return ``value`` as milliseconds since the epoch (UTC).

    Naive datetimes and date-only strings are taken as UTC.  Integers are epoch milliseconds.

    Raises
    ------
    InvalidInputError
        If ``value`` cannot be read as an instant.
    """
    if isinstance(value, bool):
        raise InvalidInputError(field, f"not a time: {value!r}", allowed=_FORMAT_HELP)
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    if isinstance(value, date):
        return to_ms(datetime(value.year, value.month, value.day, tzinfo=UTC))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(
                field, f"cannot read {value!r} as a time", allowed=_FORMAT_HELP
            ) from None
        return to_ms(dt)
    raise InvalidInputError(field, f"not a time: {value!r}", allowed=_FORMAT_HELP)


def optional_ms(value: TimeLike | None, *, field: str) -> int | None:
    """Return :func:`to_ms` of ``value``, or ``None`` when ``value`` is ``None``."""
    return None if value is None else to_ms(value, field=field)


def fmt_ms(ms: int) -> str:
    """Format epoch milliseconds as ``YYYY-MM-DD HH:MM`` UTC (seconds shown when non-zero)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if dt.second else "%Y-%m-%d %H:%M")
