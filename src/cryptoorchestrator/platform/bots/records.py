"""Recording exchange answers: the bots' orders, fills and positions, batched per process.

The bots of a group get their answers together and record them together (the process's
``BotProcess.recordings`` runs :func:`record_answers`): one transaction with one statement per
kind of row, where each answer alone paid five round trips on the loop's thread and cost a
large share of a group's CPU.

The books an answer moves belong to its bot (:class:`AnswerBooks`, a ``BotRuntime``); these
functions run on the bots' loop, which reads those books.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, insert, literal_column, select, update

from cryptoorchestrator.platform.bots.ledger import BotSettings, Ledger
from cryptoorchestrator.platform.exchange.execution import ExchangeOrder, Fill
from cryptoorchestrator.platform.model import OrderSide, OrderStatus
from cryptoorchestrator.platform.model import orders as lifecycle
from cryptoorchestrator.platform.model.clock import Clock, ms_to_datetime
from cryptoorchestrator.platform.notify.outbox import enqueue_inserted_fills, enqueue_order_updates
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import get_engine
from cryptoorchestrator.platform.storage.models import Order, Position, Trade

_ZERO = Decimal(0)
_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_TRADES: Table = Trade.__table__  # type: ignore[assignment]
_POSITIONS: Table = Position.__table__  # type: ignore[assignment]


class AnswerBooks(Protocol):
    """What recording an answer needs of its bot (a ``BotRuntime``)."""

    config: BotSettings
    settings: Settings
    ledger: Ledger
    clock: Clock
    log: logging.Logger

    @property
    def base_asset(self) -> str:
        """The traded market's base asset."""
        ...

    @property
    def quote_asset(self) -> str:
        """The traded market's quote asset."""
        ...

    def record_answer(self, order: ExchangeOrder, fills: list[Fill]) -> list[Fill]:
        """Record one answer alone (:func:`store_answers` of it); return the new fills."""
        ...

    def note_closed(self, client_order_id: str) -> None:
        """Note an order that became final (its risk slot is released at the candle's end)."""
        ...


#: One answer to record: the bot, the exchange's order, and the fills known of it.
Recording = tuple[AnswerBooks, ExchangeOrder, list[Fill]]

# Recording an answer's fills: statements built once (construction and cache keys were most of
# its CPU).
_ORDERS_BY_CIDS = select(
    _ORDERS.c.id, _ORDERS.c.client_order_id, _ORDERS.c.closed_at, _ORDERS.c.status
).where(_ORDERS.c.client_order_id.in_(bindparam("cids", expanding=True)))
_TRADES_OF_ORDERS = select(_TRADES.c.order_id, _TRADES.c.exchange_trade_id, _TRADES.c.amount).where(
    _TRADES.c.order_id.in_(bindparam("ids", expanding=True))
)
_POSITIONS_OF_BOTS = select(_POSITIONS.c.bot_id, _POSITIONS.c.symbol).where(
    _POSITIONS.c.bot_id.in_(bindparam("bots", expanding=True))
)
# One guarded update per status an answer moves an order to: the order state machine's
# predecessors of that status, so a late answer cannot move an order that went further.  The
# statuses are written into the SQL: an executemany takes no expanding ``IN`` parameters.
_UPDATE_ORDER_TO = {
    status: update(_ORDERS).where(
        _ORDERS.c.id == bindparam("order_pk"),
        _ORDERS.c.status.in_(
            [literal_column(f"'{value}'") for value in lifecycle.may_precede_values(status)]
        ),
    )
    for status in OrderStatus
    if lifecycle.may_precede(status)
}
_INSERT_TRADES = insert(_TRADES)
_UPDATE_POSITION = (
    update(_POSITIONS)
    .where(_POSITIONS.c.bot_id == bindparam("bot"))
    .where(_POSITIONS.c.symbol == bindparam("sym"))
)
_INSERT_POSITION = insert(_POSITIONS)


async def record_answers(items: list[Recording]) -> Sequence[list[Fill] | BaseException]:
    """Record a batch of answers (the process's recordings coalescer runs it)."""
    return record_all(items)


def record_all(items: list[Recording]) -> Sequence[list[Fill] | BaseException]:
    """Record ``items`` in one transaction; if it fails, each alone (its own error to it).

    Runs on the loop's thread, as a bot's own recording does: the books it moves are read by
    that loop.  A failed shared transaction leaves the books of its bots as they were before it.
    """
    if len(items) == 1:
        runtime, order, fills = items[0]
        try:
            return [runtime.record_answer(order, fills)]
        except Exception as exc:
            return [exc]
    # The books each bot had before the batch (orders become final only after the commit).
    before: dict[int, tuple[AnswerBooks, Ledger]] = {}
    for runtime, _, _ in items:
        if id(runtime) not in before:
            before[id(runtime)] = (runtime, replace(runtime.ledger))
    try:
        return store_answers(items)
    except Exception:
        for runtime, ledger in before.values():
            for name in Ledger.__dataclass_fields__:
                setattr(runtime.ledger, name, getattr(ledger, name))
        out: list[list[Fill] | BaseException] = []
        for runtime, order, fills in items:
            try:
                out.append(runtime.record_answer(order, fills))
            except Exception as exc:
                out.append(exc)
        return out


def store_answers(items: list[Recording]) -> list[list[Fill]]:
    """Record ``items`` in one transaction (see :func:`_record_rows`); once it is committed,
    note the orders that became final for their bots' end-of-candle reports."""
    with get_engine(items[0][0].settings).begin() as conn:
        applied, closing = _record_rows(conn, items)
    for runtime, cid in closing:
        runtime.note_closed(cid)
    return applied


def _record_rows(
    conn: Any, items: list[Recording]
) -> tuple[list[list[Fill]], list[tuple[AnswerBooks, str]]]:
    """Store each answer's order state and new fills and move its bot's books (in ``conn``'s
    transaction); return the fills applied per item and the orders that became final.

    An order is final in our books only once every fill of it is stored; until then it stays
    open, so reconciliation comes back for the missing fills.  Items are applied in order, so
    one order answered twice sees its first answer's fills as known.

    An answer moves the stored status only where the order state machine allows it (a late
    answer for an order that went further, say an "open" after it filled, leaves it as it is);
    its new fills are stored all the same, since fills are facts whatever the order's status.
    """
    cids = list(dict.fromkeys(str(order.client_order_id) for _, order, _ in items))
    rows = {r.client_order_id: r for r in conn.execute(_ORDERS_BY_CIDS, {"cids": cids})}
    missing = [cid for cid in cids if cid not in rows]
    if missing:
        raise LookupError(f"orders not stored: {', '.join(missing[:3])}")
    known: dict[int, dict[str, Decimal]] = {rows[cid].id: {} for cid in cids}
    for t in conn.execute(_TRADES_OF_ORDERS, {"ids": list(known)}):
        known[t.order_id][t.exchange_trade_id] = t.amount
    closed_at = {cid: rows[cid].closed_at for cid in cids}
    status_of = {cid: OrderStatus(rows[cid].status) for cid in cids}
    updates: dict[int, dict[str, Any]] = {}
    trade_rows: list[dict[str, Any]] = []
    moved: dict[int, AnswerBooks] = {}
    applied_all: list[list[Fill]] = []
    closing: list[tuple[AnswerBooks, str]] = []
    for runtime, order, fills in items:
        cid = str(order.client_order_id)
        order_pk = rows[cid].id
        stored = known[order_pk]
        have = sum(stored.values(), _ZERO) + sum(
            (f.amount for f in fills if f.trade_id not in stored), _ZERO
        )
        complete = have >= order.filled
        status = OrderStatus.PARTIALLY_FILLED if order.is_final and not complete else order.status
        if lifecycle.can_move(status_of[cid], status):
            status_of[cid] = status
            values: dict[str, Any] = {
                "exchange_order_id": order.order_id,
                "average_price": order.average_price,
                "status": status.value,
                "filled": min(have, order.filled),
            }
            if order.is_final and complete and closed_at[cid] is None:
                values["closed_at"] = closed_at[cid] = ms_to_datetime(runtime.clock.now_ms())
                closing.append((runtime, cid))
            updates[order_pk] = {**updates.get(order_pk, {}), **values}
        elif status is not status_of[cid]:  # (the same final word again changes nothing)
            runtime.log.warning(
                "late answer left as it is",
                extra={"client_order_id": cid, "stored": status_of[cid], "answer": status},
            )
        applied: list[Fill] = []
        for fill in fills:
            if fill.trade_id in stored:
                continue
            pnl = runtime.ledger.apply(fill, runtime.base_asset, runtime.quote_asset)
            trade_rows.append(
                {
                    "bot_id": runtime.config.bot_id,
                    "order_id": order_pk,
                    "exchange_trade_id": fill.trade_id,
                    "symbol": fill.symbol,
                    "side": fill.side.value,
                    "price": fill.price,
                    "amount": fill.amount,
                    "fee": fill.fee,
                    "fee_currency": fill.fee_currency,
                    "realized_pnl": pnl if fill.side is OrderSide.SELL else None,
                    "timestamp": ms_to_datetime(fill.timestamp_ms),
                }
            )
            stored[fill.trade_id] = fill.amount
            applied.append(fill)
        if applied:
            moved[id(runtime)] = runtime
        applied_all.append(applied)
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for order_pk, values in updates.items():
        key = (values["status"], tuple(sorted(values)))
        groups.setdefault(key, []).append({"order_pk": order_pk, **values})
    for (status_value, _), group in groups.items():
        conn.execute(_UPDATE_ORDER_TO[OrderStatus(status_value)], group)
    if trade_rows:
        conn.execute(_INSERT_TRADES, trade_rows)
        # Their notifications commit with them (a no-op where the outbox is not installed).
        enqueue_inserted_fills(conn, trade_rows)
    enqueue_order_updates(conn, updates)  # rejected / canceled orders (after their fills)
    if moved:
        _save_positions(conn, list(moved.values()))
    return applied_all, closing


def _save_positions(conn: Any, runtimes: list[AnswerBooks]) -> None:
    """Write the bots' positions from their books (in the caller's transaction)."""
    bots = [r.config.bot_id for r in runtimes]
    have = {(p.bot_id, p.symbol) for p in conn.execute(_POSITIONS_OF_BOTS, {"bots": bots})}
    updates, inserts = [], []
    for runtime in runtimes:
        book = runtime.ledger
        values = {
            "amount": book.amount,
            "average_price": book.average_price,
            "realized_pnl": book.realized_pnl,
            "fees_paid": book.fees_paid,
        }
        bot, symbol = runtime.config.bot_id, runtime.config.symbol
        if (bot, symbol) in have:
            updates.append({"bot": bot, "sym": symbol, **values})
        else:
            inserts.append({"bot_id": bot, "symbol": symbol, **values})
    if updates:
        conn.execute(_UPDATE_POSITION, updates)
    if inserts:
        conn.execute(_INSERT_POSITION, inserts)


__all__ = ["AnswerBooks", "Recording", "record_all", "record_answers", "store_answers"]
