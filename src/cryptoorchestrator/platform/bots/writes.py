"""The trading loop's hot-path writes, batched across the bots of one process.

Three writes happen for every bot on every candle: the order intent (before anything leaves the
process), the "submitted" mark (just before the request goes out) and the equity snapshot.  Each
is a :class:`~cryptoorchestrator.platform.batching.Coalescer` here, and the bots of one process
share one :class:`OrderWrites` (their ``BotProcess.writes``), so the bots of a group that act on
the same candle share one transaction per step instead of one each.  A lone bot gets a batch of
one: there is a single code path.

Batches keep each bot's guarantees: an intent is stored before its caller goes on, an existing
order with the same client order id is reported instead of inserted (a restarted bot must not act
twice), and a conflict with another process inserting the same id at the same moment falls back
to one transaction per intent, so only the bot that lost the race learns it lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError

from cryptoorchestrator.platform.batching import Coalescer
from cryptoorchestrator.platform.model.clock import Clock, LiveClock, ms_to_datetime
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import get_engine
from cryptoorchestrator.platform.storage.marks import mark_submitted
from cryptoorchestrator.platform.storage.models import EquitySnapshot, Order

_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_SNAPSHOTS: Table = EquitySnapshot.__table__  # type: ignore[assignment]

#: What an intent's caller learns when another process stored the same id first.
EXISTS = "exists"


@dataclass(frozen=True)
class Snapshot:
    """One equity snapshot row."""

    bot_id: int
    timestamp: datetime
    equity: Decimal
    cash: Decimal
    position_value: Decimal


class OrderWrites:
    """Batched intent, submitted-mark and snapshot writes to one database.

    Parameters
    ----------
    settings
        Where the database is.
    clock
        The time of submitted marks (default: the wall clock).
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock if clock is not None else LiveClock()
        self.intent: Coalescer[dict[str, Any], str | None] = Coalescer(self._intents)
        self.submitted: Coalescer[tuple[str, str], None] = Coalescer(self._submitted)
        self.snapshot: Coalescer[Snapshot, None] = Coalescer(self._snapshots)

    # The statements run on the loop's thread: the batch is what every caller waits for, and a
    # thread hop would only add a context switch to each step.

    async def _intents(self, rows: list[dict[str, Any]]) -> Sequence[str | None]:
        return self.store_intents(rows)

    def store_intents(self, rows: list[dict[str, Any]]) -> list[str | None]:
        """Insert new intents in one transaction; return each id's existing status or None."""
        column = _ORDERS.c.client_order_id
        try:
            with get_engine(self.settings).begin() as conn:
                found = {
                    cid: str(status)
                    for cid, status in conn.execute(
                        select(column, _ORDERS.c.status).where(
                            column.in_([r["client_order_id"] for r in rows])
                        )
                    )
                }
                fresh: list[dict[str, Any]] = []
                out: list[str | None] = []
                for row in rows:
                    cid = row["client_order_id"]
                    if cid in found:
                        out.append(found[cid])
                    else:
                        found[cid] = EXISTS  # the same id twice in one batch: the first wins
                        fresh.append(row)
                        out.append(None)
                if fresh:
                    conn.execute(insert(_ORDERS), fresh)
            return out
        except IntegrityError:
            # Another process inserted one of these ids after our select: retry one by one,
            # so only that intent's bot is told it lost.
            if len(rows) == 1:
                return [EXISTS]
            return [self.store_intents([row])[0] for row in rows]

    async def _submitted(self, items: list[tuple[str, str]]) -> Sequence[None | BaseException]:
        return self.mark_submitted(items)

    def mark_submitted(self, items: list[tuple[str, str]]) -> list[None | BaseException]:
        """Mark ``(client order id, reason)`` orders submitted, one statement per reason."""
        with get_engine(self.settings).begin() as conn:
            missing = mark_submitted(conn, items, ms_to_datetime(self.clock.now_ms()))
        return [
            LookupError(f"order {cid} is not stored") if cid in missing else None
            for cid, _ in items
        ]

    async def _snapshots(self, rows: list[Snapshot]) -> Sequence[None]:
        with get_engine(self.settings).begin() as conn:
            conn.execute(
                insert(_SNAPSHOTS),
                [
                    {
                        "bot_id": r.bot_id,
                        "timestamp": r.timestamp,
                        "equity": r.equity,
                        "cash": r.cash,
                        "position_value": r.position_value,
                    }
                    for r in rows
                ],
            )
        return [None] * len(rows)


__all__ = ["EXISTS", "OrderWrites", "Snapshot"]
