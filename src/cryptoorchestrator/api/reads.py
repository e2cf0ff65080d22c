"""The API's hottest reads, served on the event loop over an async psycopg pool (PostgreSQL).

``GET /api/trades`` through the synchronous stack cost ~2 ms of CPU per request: a thread-pool
hop, SQLAlchemy's execution and result machinery, then JSON.  The same page read with an async
psycopg connection costs ~0.25 ms, and nothing waits for a thread.  The SQL is still
SQLAlchemy's: :func:`~cryptoorchestrator.platform.services.trading.trades_query` compiled once
for PostgreSQL, and each value goes through its column type's result processing, so both paths
return the same rows (a test compares them).  SQLite has no async driver here and keeps the
synchronous path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import TypeDecorator, bindparam, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from cryptoorchestrator.platform.services.pagination import (
    Page,
    check_limit,
    encode_cursor,
    page_of,
)
from cryptoorchestrator.platform.services.trading import (
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


class AsyncReads:
    """Read-only queries over an async connection pool in autocommit mode.

    Parameters
    ----------
    conninfo
        libpq connection string or URI.
    max_size
        Most connections the pool opens.
    """

    def __init__(self, conninfo: str, *, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
            open=False,
            name="api-reads",
        )
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

    @classmethod
    def for_settings(cls, settings: Settings) -> AsyncReads | None:
        """Return the reads for a PostgreSQL database, or None for any other."""
        url = make_url(settings.database_url)
        if url.get_backend_name() != "postgresql":
            return None
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(conninfo, max_size=settings.db.pool_size)

    async def open(self) -> None:
        """Open the pool (without waiting: the database may come up after the API)."""
        await self.pool.open(wait=False)
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Close the pool."""
        self._loop = None
        await self.pool.close()

    def usable(self) -> bool:
        """Whether the pool is open on the running event loop (an app served without its
        lifespan, as some test clients do, falls back to the synchronous path)."""
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
    ) -> Page[tuple[Any, ...]]:
        """Fills of ``user_id``'s bots, newest first: tuples in the ``trades`` column order."""
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
