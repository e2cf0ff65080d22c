"""Pages of a user's fills for the API's hottest list, from a backend chosen once per database.

:func:`trade_reads_for` picks the implementation when the app is built:

* :class:`PooledTradeReads` (PostgreSQL) reads on the event loop over an async psycopg pool.
  Through the synchronous stack a page cost a thread-pool hop plus SQLAlchemy's execution and
  result machinery; here nothing waits for a thread.  The SQL is still SQLAlchemy's:
  :func:`~cryptoorchestrator.platform.services.trading.trades_query` compiled once for
  PostgreSQL, and each value goes through its column type's result processing, so both
  backends return the same rows (a test compares them).
* :class:`SessionTradeReads` (any other database; SQLite has no async driver here) runs
  :class:`~cryptoorchestrator.platform.services.trading.TradingQueries` on a worker thread.

Both return tuples in the ``trades`` table's column order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio.to_thread
import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import TypeDecorator, bindparam, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.services.pagination import (
    Page,
    check_limit,
    encode_cursor,
    page_of,
)
from cryptoorchestrator.platform.services.trading import (
    TradingQueries,
    check_owner,
    trades_page_query,
    trades_query,
)
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import Bot, Trade

log = logging.getLogger(__name__)
#: How the pool's sessions appear in ``pg_stat_activity``.
APPLICATION_NAME = "cryptoorch-api-reads"
_DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined]


class TradeReads(Protocol):
    """Pages of fills of a user's bots, newest first (keyset pagination)."""

    async def open(self) -> None:
        """Acquire what the reads need (called once the event loop runs)."""
        ...

    async def close(self) -> None:
        """Release it."""
        ...

    async def trades(
        self, user_id: int, *, bot_id: int | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[Any]:
        """Return a page of ``user_id``'s fills: tuples in the ``trades`` column order."""
        ...


class SessionTradeReads:
    """Trades read through ORM sessions, on a worker thread.

    Parameters
    ----------
    session_factory
        Makes the session each read runs in.
    """

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self.session_factory = session_factory

    async def open(self) -> None:
        """Do nothing: sessions come from the factory on demand."""

    async def close(self) -> None:
        """Do nothing: each read closes its session."""

    def trades_sync(
        self, user_id: int, *, bot_id: int | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[Any]:
        """Return a page of ``user_id``'s fills, blocking (see :meth:`trades`)."""
        with self.session_factory() as session:
            return TradingQueries(session, user_id).trades(
                bot_id=bot_id, limit=limit, cursor=cursor
            )

    async def trades(
        self, user_id: int, *, bot_id: int | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[Any]:
        """Return a page of ``user_id``'s fills, read on a worker thread."""
        return await anyio.to_thread.run_sync(
            lambda: self.trades_sync(user_id, bot_id=bot_id, limit=limit, cursor=cursor)
        )


def _sql(statement: Any) -> str:
    """SQLAlchemy's PostgreSQL SQL for ``statement``, with ``%(name)s`` parameters."""
    return str(statement.compile(dialect=_DIALECT))


def _processors(columns: Sequence[Any]) -> list[tuple[int, Callable[[Any, Any], Any]]]:
    """``(index, process)`` for each column whose type normalises what the driver returns
    (the exact processing the ORM applies: Money strips padding, UTCDateTime converts to UTC)."""
    return [
        (i, column.type.process_result_value)
        for i, column in enumerate(columns)
        if isinstance(column.type, TypeDecorator)
    ]


def _process(
    raw: list[tuple[Any, ...]], processors: list[tuple[int, Callable[[Any, Any], Any]]]
) -> list[tuple[Any, ...]]:
    out = []
    for row in raw:
        values = list(row)
        for i, process in processors:
            value = values[i]
            if value is not None:
                values[i] = process(value, _DIALECT)
        out.append(tuple(values))
    return out


class PooledTradeReads:
    """Trades read over an async PostgreSQL connection pool in autocommit mode.

    Parameters
    ----------
    conninfo
        libpq connection string or URI.
    fallback
        Serves reads while the pool is not open on the running event loop (an app served
        without its lifespan, as some test clients do).
    max_size
        Most connections the pool opens.
    """

    def __init__(self, conninfo: str, fallback: SessionTradeReads, *, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
            open=False,
            name="api-reads",
        )
        self.fallback = fallback
        self._loop: asyncio.AbstractEventLoop | None = None
        columns = list(Trade.__table__.columns)
        names = [c.name for c in columns]
        self._cursor_columns = (names.index("timestamp"), names.index("id"))
        self._trade_processors = _processors(columns)
        self._owner_sql = _sql(select(Bot.user_id).where(Bot.id == bindparam("bot_id")))
        self._trades_sql = {
            (by_bot, after): _sql(trades_query(by_bot=by_bot, after=after))
            for by_bot in (False, True)
            for after in (False, True)
        }

    async def open(self) -> None:
        """Open the pool (without waiting: the database may come up after the API)."""
        await self.pool.open(wait=False)
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Close the pool."""
        self._loop = None
        await self.pool.close()

    def usable(self) -> bool:
        """Return whether the pool is open on the running event loop."""
        return self._loop is not None and asyncio.get_running_loop() is self._loop

    async def _fetch(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        # A connection the server dropped fails on first use: a read is safe to run again once,
        # on a fresh connection (the pool discards the broken one).
        for attempt in (1, 2):
            try:
                async with self.pool.connection() as conn:
                    cursor = await conn.execute(sql, params, prepare=True)
                    return await cursor.fetchall()
            except psycopg.OperationalError:
                if attempt == 2:
                    raise
                log.warning("read failed on a pooled connection; retrying on a fresh one")
        raise AssertionError("unreachable")

    async def trades(
        self, user_id: int, *, bot_id: int | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[Any]:
        """Return a page of ``user_id``'s fills, newest first, read on the event loop."""
        if not self.usable():
            return await self.fallback.trades(user_id, bot_id=bot_id, limit=limit, cursor=cursor)
        check_limit(limit)
        if bot_id is not None:
            owner = await self._fetch(self._owner_sql, {"bot_id": bot_id})
            check_owner(owner[0][0] if owner else None, user_id, bot_id)
        _, params = trades_page_query(user_id, bot_id, limit, cursor)
        raw = await self._fetch(self._trades_sql[(bot_id is not None, bool(cursor))], params)
        at, row_id = self._cursor_columns
        return page_of(
            _process(raw, self._trade_processors),
            limit,
            lambda row: encode_cursor(row[at], row[row_id]),
        )


def trade_reads_for(settings: Settings, session_factory: Callable[[], Session]) -> TradeReads:
    """Return the trade reads for the database of ``settings``.

    Parameters
    ----------
    settings
        Platform settings (the database URL and pool size).
    session_factory
        Sessions on that database, for the synchronous backend (and the pooled one's fallback).

    Returns
    -------
    TradeReads
        :class:`PooledTradeReads` for PostgreSQL, :class:`SessionTradeReads` for any other.
    """
    sessions = SessionTradeReads(session_factory)
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        return sessions
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return PooledTradeReads(conninfo, sessions, max_size=settings.db.pool_size)
