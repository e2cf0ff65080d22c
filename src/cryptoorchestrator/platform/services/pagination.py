"""Keyset (cursor) pagination: an opaque cursor encodes the last row's ``(timestamp, id)``.

Offsets get slower with every page and skip or repeat rows when new ones arrive; a keyset cursor
costs one index seek whatever the page, and newest-first lists stay stable while rows are added.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from cryptoorchestrator.platform.errors import InvalidInputError

T = TypeVar("T")

MAX_LIMIT = 500
#: Largest ids of INTEGER and BIGINT primary keys.  A cursor must stay within its table's id
#: column: PostgreSQL casts the bound id to the column type and fails on anything larger.
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
#: Longer than any cursor encode_cursor makes (a 17-digit stamp and a 19-digit id).
MAX_CURSOR = 200
#: Microseconds from the epoch to the last instant a cursor may name (datetime's year 9999).
_MAX_STAMP = (datetime(9999, 12, 31, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
    microseconds=1
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows, newest first, and the cursor of the next page (None at the end)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(at: datetime | None, row_id: int) -> str:
    """Return the opaque cursor for a row at ``at`` with primary key ``row_id``."""
    stamp = None if at is None else (at - _EPOCH) // _US  # exact: floats lose microseconds
    raw = json.dumps([stamp, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    cursor: str, *, field: str = "cursor", max_id: int = BIGINT_MAX
) -> tuple[datetime | None, int]:
    """Return ``(timestamp, id)`` from a cursor made by :func:`encode_cursor`.

    Parameters
    ----------
    cursor
        The ``nextCursor`` of an earlier page.
    field
        The name of the parameter, for the error.
    max_id
        The largest id of the listed table's primary key (:data:`INT_MAX` for INTEGER
        columns): a larger id names no row and would overflow the column's type in SQL.

    Raises
    ------
    InvalidInputError
        If the cursor was not produced by this API for this list.
    """
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        # type() is: a JSON true is a bool, which isinstance(..., int) would let through.
        if type(row_id) is not int or not (stamp is None or type(stamp) is int):
            raise ValueError("bad types")
        # Bounds of the id column and of datetime: anything else was not made by encode_cursor.
        if not 0 < row_id <= max_id or (stamp is not None and not 0 <= stamp <= _MAX_STAMP):
            raise ValueError("out of range")
        at = None if stamp is None else _EPOCH + stamp * _US
    except (ValueError, TypeError, binascii.Error, OverflowError, OSError) as exc:
        raise InvalidInputError(
            field, "malformed cursor; pass nextCursor unchanged", allowed="a nextCursor"
        ) from exc
    return at, row_id


def page_of(rows: list[T], limit: int, key: Callable[[T], str]) -> Page[T]:
    """Page ``rows`` fetched with ``LIMIT limit + 1``: the extra row only says a next page exists.

    ``key`` makes the cursor of the last row kept.
    """
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, key(rows[-1]) if more and rows else None)


def check_limit(limit: int, *, field: str = "limit") -> int:
    """Return ``limit`` if it is within 1..MAX_LIMIT."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(
            field, f"must be between 1 and {MAX_LIMIT}", allowed=f"1-{MAX_LIMIT}"
        )
    return limit
