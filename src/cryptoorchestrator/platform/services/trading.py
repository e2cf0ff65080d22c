"""Read-only queries over a user's trading records: trades (fills), orders and positions.

Lists are newest first with keyset pagination on ``(timestamp, id)``; the descending indexes
``ix_trades_bot_timestamp_desc`` / ``ix_orders_bot_created_desc`` serve them without sorting, so a
page costs the same on the millionth trade as on the first.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, Select, bindparam, literal, select, tuple_
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.services.pagination import (
    INT_MAX,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
    page_of,
)
from cryptoorchestrator.platform.storage.models import Bot, Order, Position, Trade
from cryptoorchestrator.platform.storage.types import BigId, UTCDateTime


class TradingQueries:
    """Trades, orders and positions of one user's bots."""

    def __init__(self, session: Session, user_id: int) -> None:
        self.session = session
        self.user_id = user_id

    def _read(self) -> Connection:
        """The session's connection, in autocommit mode if it has not begun a transaction.

        Each list is one SELECT, consistent on its own: without a transaction it costs one
        round trip instead of three (BEGIN, SELECT, ROLLBACK when the session closes).
        """
        if self.session.in_transaction():
            return self.session.connection()
        return self.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

    def _bot_ids(self, bot_id: int | None) -> Any:
        """A subquery of the user's bot ids, or just ``bot_id`` after checking it is theirs."""
        if bot_id is None:
            return select(Bot.id).where(Bot.user_id == self.user_id).scalar_subquery()
        owner = self._read().scalar(select(Bot.user_id).where(Bot.id == bot_id))
        check_owner(owner, self.user_id, bot_id)
        return None

    def trades(
        self, *, bot_id: int | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[Any]:
        """Return fills, newest first (rows with the ``trades`` columns as attributes)."""
        check_limit(limit)
        if bot_id is not None:
            self._bot_ids(bot_id)
        query, params = trades_page_query(self.user_id, bot_id, limit, cursor)
        rows = list(self._read().execute(query, params).all())
        return page_of(rows, limit, lambda r: encode_cursor(r.timestamp, r.id))

    def orders(
        self,
        *,
        bot_id: int | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Order]:
        """Return orders, newest first, optionally of one status."""
        check_limit(limit)
        ids = self._bot_ids(bot_id)
        query = select(Order)
        query = (
            query.where(Order.bot_id == bot_id)
            if ids is None
            else query.where(Order.bot_id.in_(ids))
        )
        if status:
            query = query.where(Order.status == status)
        if cursor:
            at, row_id = decode_cursor(cursor)
            query = query.where(
                tuple_(Order.created_at, Order.id)
                < tuple_(literal(at, UTCDateTime()), literal(row_id, BigId))
            )
        query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
        rows = list(self.session.scalars(query))
        return page_of(rows, limit, lambda r: encode_cursor(r.created_at, r.id))

    def positions(
        self,
        *,
        bot_id: int | None = None,
        include_flat: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Position]:
        """Return positions (open ones unless ``include_flat``), highest id first."""
        check_limit(limit)
        ids = self._bot_ids(bot_id)
        query = select(Position)
        query = (
            query.where(Position.bot_id == bot_id)
            if ids is None
            else query.where(Position.bot_id.in_(ids))
        )
        if not include_flat:
            query = query.where(Position.amount != 0)
        if cursor:
            _, row_id = decode_cursor(cursor, max_id=INT_MAX)  # positions.id is INTEGER
            query = query.where(Position.id < row_id)
        rows = list(self.session.scalars(query.order_by(Position.id.desc()).limit(limit + 1)))
        return page_of(rows, limit, lambda r: encode_cursor(None, r.id))


def check_owner(owner: int | None, user_id: int, bot_id: int) -> None:
    """Raise 404 unless bot ``bot_id`` (owned by ``owner``, None if absent) is ``user_id``'s."""
    if owner != user_id:
        raise NotFoundError(f"bot {bot_id} not found")


def trades_page_query(
    user_id: int, bot_id: int | None, limit: int, cursor: str | None
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement and parameters of one trades page (``limit + 1`` rows, see page_of).

    Shared by the synchronous service and the API's async reads, which first check ``limit``
    and that ``bot_id`` is the user's (:func:`check_owner`).
    """
    params: dict[str, Any] = {"limit": limit + 1}
    if bot_id is not None:
        params["bot_id"] = bot_id
    else:
        params["user_id"] = user_id
    if cursor:
        params["at"], params["row_id"] = decode_cursor(cursor)
    return trades_query(by_bot=bot_id is not None, after=bool(cursor)), params


@functools.cache
def trades_query(*, by_bot: bool, after: bool) -> Select[Any]:
    """The trades page query, built once per shape with bound parameters.

    Plain rows of the table's columns, not ORM objects (identity-map bookkeeping was most of
    the cost of this, the API's hottest list), and one statement object per shape, so
    SQLAlchemy reuses its memoised cache key and compiled form instead of rebuilding both.
    """
    query = select(*Trade.__table__.columns)
    if by_bot:
        query = query.where(Trade.bot_id == bindparam("bot_id"))
    else:
        mine = select(Bot.id).where(Bot.user_id == bindparam("user_id")).scalar_subquery()
        query = query.where(Trade.bot_id.in_(mine))
    if after:
        query = query.where(
            tuple_(Trade.timestamp, Trade.id)
            < tuple_(bindparam("at", type_=UTCDateTime()), bindparam("row_id", type_=BigId))
        )
    return query.order_by(Trade.timestamp.desc(), Trade.id.desc()).limit(bindparam("limit"))
