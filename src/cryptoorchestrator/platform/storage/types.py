"""Column types that behave the same on SQLite and PostgreSQL.

SQLite has no exact decimal type and forgets time zones; these decorators keep money exact (as
text on SQLite, ``NUMERIC(38, 18)`` on PostgreSQL) and every timestamp timezone-aware in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Primary keys of big tables: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


#: Digits of a money column in all, and after the point: ``NUMERIC(38, 18)``.
MONEY_PRECISION = 38
MONEY_SCALE = 18
#: Arithmetic wide enough that normalising a stored amount never rounds it: the default context
#: keeps 28 significant digits, fewer than the 38 of a money column.
_EXACT = Context(prec=80)


class Money(TypeDecorator[Decimal]):
    """An exact decimal: ``NUMERIC(38, 18)`` on PostgreSQL, canonical text on SQLite."""

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Store text on SQLite, whose NUMERIC affinity would round through a float."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Refuse floats (they are never exact) and normalise to a Decimal or its text."""
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money columns take Decimal, int or str, never float")
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if not number.is_finite():
            raise ValueError(f"money must be finite, got {number}")
        if dialect.name == "sqlite":
            return format(number, "f")
        return number

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Return a Decimal whatever the driver handed back."""
        if value is None:
            return None
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        # PostgreSQL pads to 18 places; strip the padding (without switching to exponent form
        # for whole numbers) so values read back as they were written.
        try:
            if number == number.to_integral_value(context=_EXACT):
                return number.quantize(Decimal(1), context=_EXACT)
            return number.normalize(context=_EXACT)
        except InvalidOperation:  # wider than any money column: return it as it was stored
            return number


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Reject naive datetimes: they are ambiguous and the cause of many P&L bugs."""
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC) or attach tzinfo=UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Attach UTC to what SQLite returns without a zone."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)
