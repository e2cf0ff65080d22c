"""The transactional outbox: notification rows written in the same transaction as their fact.

:func:`enqueue` writes one ``notifications`` row per channel of the user that wants the event;
``(channel_id, event_key)`` is unique and conflicts are ignored, so enqueueing a fact twice (a
retry, a replay after a crash) notifies once.  :func:`install_outbox` makes every session of the
process do it for the facts themselves: a fill (``trades``), a bot status change
(``bot_status_events``) and a risk event (breach, denial, kill switch) flushed in a session get
their rows in that flush, inside the same transaction, so a rolled-back fact notifies nobody and
a committed one is never without its rows.  The bots and the risk actor only write rows; sending
is the dispatcher's job.

A fill is ``order.filled`` when its order's stored status is ``filled`` once the fill is
recorded, else ``order.partially_filled`` (the order still open, or canceled after part of it
filled); either way its key is ``fill:<trade id>``, so a fill is told once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, event, inspect, select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.notify.events import Event, EventType, wants
from cryptoorchestrator.platform.notify.subscriptions import QuietHours, hold_until
from cryptoorchestrator.platform.storage.models import (
    Bot,
    BotStatusEvent,
    Notification,
    NotificationChannel,
    Order,
    RiskEvent,
    Trade,
    User,
)
from cryptoorchestrator.platform.storage.types import utcnow

_STATUS_EVENTS = {
    "Starting": EventType.BOT_STARTING,
    "Running": EventType.BOT_RUNNING,
    "Stopped": EventType.BOT_STOPPED,
    "Error": EventType.BOT_ERROR,
}
_install_lock = threading.Lock()
_installed = False


def _connection(target: Session | Connection) -> Connection:
    return target.connection() if isinstance(target, Session) else target


def enqueue_many(target: Session | Connection, items: Iterable[tuple[int, Event]]) -> int:
    """Write the rows of each ``(user_id, event)`` for the user's channels that want it.

    Parameters
    ----------
    target
        The session (or connection) of the transaction that records the fact.
    items
        Who is told what.

    Returns
    -------
    int
        Rows written (already-enqueued keys count zero).
    """
    pairs = list(items)
    if not pairs:
        return 0
    conn = _connection(target)
    users = {user_id for user_id, _ in pairs}
    channels = conn.execute(
        select(
            NotificationChannel.id,
            NotificationChannel.user_id,
            NotificationChannel.events,
            NotificationChannel.min_severity,
            NotificationChannel.bot_ids,
            NotificationChannel.quiet_start,
            NotificationChannel.quiet_end,
            NotificationChannel.timezone,
        ).where(NotificationChannel.user_id.in_(users), NotificationChannel.enabled.is_(True))
    ).all()
    if not channels:
        return 0
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for channel in channels:
        quiet = quiet_hours_of(channel.quiet_start, channel.quiet_end, channel.timezone)
        for user_id, ev in pairs:
            if channel.user_id != user_id:
                continue
            if not wants(channel.events, channel.min_severity, ev, channel.bot_ids):
                continue
            rows.append(outbox_row(channel.id, user_id, ev, quiet, now))
    return insert_rows(conn, rows)


def outbox_row(
    channel_id: int, user_id: int, ev: Event, quiet: QuietHours | None, now: datetime
) -> dict[str, Any]:
    """The values of ``ev``'s row for one channel (held when ``quiet`` says so)."""
    held = hold_until(quiet, ev, now)
    return {
        "channel_id": channel_id,
        "user_id": user_id,
        "event_key": ev.key,
        "event_type": ev.type.value,
        "severity": ev.level.value,
        "payload": ev.to_payload(),
        "status": "pending" if held is None else "held",
        "attempts": 0,
        "next_attempt_at": now if held is None else held,
        "created_at": now,
    }


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert outbox rows (:func:`outbox_row`), ignoring keys a channel already has; return
    the rows written."""
    if not rows:
        return 0
    # Imported here: the bot and risk actors import this module at start-up, and most flushes
    # never get this far (the PostgreSQL dialect module alone is a noticeable import).
    stmt: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(Notification)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(Notification)
    stmt = stmt.on_conflict_do_nothing(index_elements=["channel_id", "event_key"])
    # Counted by RETURNING: a batched insert's rowcount is not reliable on every driver.
    return len(conn.execute(stmt.returning(Notification.id), rows).all())


def quiet_hours_of(start: str | None, end: str | None, zone: str | None) -> QuietHours | None:
    """A stored channel's quiet hours; a row the API would refuse (edited by hand) has none."""
    try:
        return QuietHours.parse(start, end, zone)
    except InvalidInputError:
        return None


def enqueue(target: Session | Connection, user_id: int, ev: Event) -> int:
    """Enqueue ``ev`` for ``user_id``'s channels in ``target``'s transaction; return the rows."""
    return enqueue_many(target, [(user_id, ev)])


def _num(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _fill_event(trade: Trade, bot_name: str | None, order_status: str | None = None) -> Event:
    """A fill: ``order.filled`` when its order is filled, else ``order.partially_filled``.

    ``order_status`` is the order's stored status when the fill is recorded (fills and their
    order's status are written in one transaction); None (unknown) counts as filled.
    """
    who = bot_name or f"bot {trade.bot_id}"
    side = trade.side.upper()
    price, amount = _num(trade.price), _num(trade.amount)
    partial = order_status is not None and order_status != "filled"
    verb = "Partially filled" if partial else "Filled"
    return Event(
        type=EventType.ORDER_PARTIALLY_FILLED if partial else EventType.ORDER_FILLED,
        # One key per fill whatever its type: a fill is told once.
        key=f"fill:{trade.id}",
        title=f"{who}: {side} {amount} {trade.symbol} @ {price}"
        + (" (partial)" if partial else ""),
        text=f"{verb} {side} {amount} {trade.symbol} at {price} (fee {_num(trade.fee)}).",
        at=trade.timestamp,
        data={
            "botId": trade.bot_id,
            "tradeId": trade.id,
            "orderId": trade.order_id,
            "symbol": trade.symbol,
            "side": trade.side,
            "price": price,
            "amount": amount,
            "fee": _num(trade.fee),
            "realizedPnl": _num(trade.realized_pnl),
            "orderStatus": order_status,
        },
    )


def _status_event(row: BotStatusEvent, bot_name: str | None) -> Event | None:
    kind = _STATUS_EVENTS.get(row.status)
    if kind is None:
        return None
    who = bot_name or f"bot {row.bot_id}"
    reason = f": {row.reason}" if row.reason else ""
    return Event(
        type=kind,
        key=f"bot_status:{row.id}",
        title=f"{who} is {row.status}",
        text=f"{who} is {row.status}{reason}",
        at=row.at,
        data={"botId": row.bot_id, "status": row.status, "reason": row.reason},
    )


def _risk_event(row: RiskEvent, bot_name: str | None) -> Event:
    kinds = {
        "breach": EventType.RISK_BREACH,
        "kill_switch": EventType.KILL_SWITCH_ENGAGED,
        "kill_switch_released": EventType.KILL_SWITCH_RELEASED,
    }
    kind = kinds.get(row.kind, EventType.RISK_DENIAL)
    prefix = (
        "kill"
        if kind in (EventType.KILL_SWITCH_ENGAGED, EventType.KILL_SWITCH_RELEASED)
        else "risk"
    )
    where = f"{bot_name or f'bot {row.bot_id}'}: " if row.bot_id is not None else ""
    limit = f" ({row.limit_name})" if row.limit_name else ""
    return Event(
        type=kind,
        key=f"{prefix}:{row.id}",
        title=f"{where}{row.message}{limit}",
        text=f"{where}{row.message}{limit}",
        at=row.created_at,
        data={
            "botId": row.bot_id,
            "riskEventId": row.id,
            "kind": row.kind,
            "limit": row.limit_name,
            "details": row.details,
        },
    )


def _risk_users(conn: Connection, row: RiskEvent, owners: dict[int, int]) -> list[int]:
    """Who hears of a risk event: the bot's owner, the user of a user scope, else the admins."""
    if row.bot_id is not None:
        owner = owners.get(row.bot_id)
        return [] if owner is None else [owner]
    scope = str((row.details or {}).get("scope", ""))
    if scope.startswith("user:") and scope[5:].isdigit():
        return [int(scope[5:])]
    return list(
        conn.execute(
            select(User.id).where(User.role == "admin", User.is_active.is_(True))
        ).scalars()
    )


def facts_to_events(conn: Connection, facts: list[Any]) -> list[tuple[int, Event]]:
    """Turn flushed facts (trades, bot status events, risk events) into who is told what."""
    bot_ids = {getattr(f, "bot_id", None) for f in facts} - {None}
    bots: dict[int, tuple[int, str]] = {}
    if bot_ids:
        for bot_id, user_id, bot_name in conn.execute(
            select(Bot.id, Bot.user_id, Bot.name).where(Bot.id.in_(bot_ids))
        ):
            bots[bot_id] = (user_id, bot_name)
    owners = {bot_id: owner for bot_id, (owner, _) in bots.items()}
    order_ids = {f.order_id for f in facts if isinstance(f, Trade)}
    order_status: dict[int, str] = {}
    if order_ids:
        found = conn.execute(select(Order.id, Order.status).where(Order.id.in_(order_ids)))
        order_status = {order_id: status for order_id, status in found}

    def name(bot_id: int | None) -> str | None:
        return bots[bot_id][1] if bot_id in bots else None

    out: list[tuple[int, Event]] = []
    for fact in facts:
        if isinstance(fact, Trade):
            if fact.bot_id in owners:
                status = order_status.get(fact.order_id)
                out.append((owners[fact.bot_id], _fill_event(fact, name(fact.bot_id), status)))
        elif isinstance(fact, BotStatusEvent):
            ev = _status_event(fact, name(fact.bot_id))
            if ev is not None and fact.bot_id in owners:
                out.append((owners[fact.bot_id], ev))
        elif isinstance(fact, RiskEvent):
            ev = _risk_event(fact, name(fact.bot_id))
            out.extend((user_id, ev) for user_id in _risk_users(conn, fact, owners))
    return out


#: Databases seen with the outbox's tables (by URL): checked until found, then trusted.
_ready: set[str] = set()


def outbox_ready(conn: Connection) -> bool:
    """Whether this database has the outbox's tables (a database not yet migrated has not).

    A process with the outbox installed may write facts into a database at an older schema
    (a restore in progress, an operator's tool); its facts must not fail for that.
    """
    key = conn.engine.url.render_as_string(hide_password=True)
    if key in _ready:
        return True
    if inspect(conn).has_table(Notification.__tablename__):
        _ready.add(key)
        return True
    return False


def _after_flush(session: Session, _context: Any) -> None:
    facts = [f for f in session.new if isinstance(f, Trade | BotStatusEvent | RiskEvent)]
    if facts:
        conn = session.connection()
        if outbox_ready(conn):
            enqueue_many(conn, facts_to_events(conn, facts))


def enqueue_inserted_fills(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Enqueue the fills a Core ``INSERT`` just wrote (the ORM flush hook does not see those).

    The bots' batched recording (:mod:`cryptoorchestrator.platform.bots.records`) inserts fills
    as rows, not objects; it calls this in the same transaction, so a fill and its notification
    commit together.  ``rows`` are the inserted values (``bot_id`` and ``exchange_trade_id``
    name each one).  Nothing happens in a process without the outbox (replays, tools).
    """
    if not _installed or not rows or not outbox_ready(conn):
        return 0
    wanted = {(r["bot_id"], r["exchange_trade_id"]) for r in rows if r.get("bot_id") is not None}
    if not wanted:
        return 0
    session = Session(bind=conn)
    try:
        found = session.scalars(
            select(Trade).where(
                Trade.bot_id.in_({bot for bot, _ in wanted}),
                Trade.exchange_trade_id.in_({tid for _, tid in wanted}),
            )
        ).all()
        trades = [t for t in found if (t.bot_id, t.exchange_trade_id) in wanted]
        return enqueue_many(conn, facts_to_events(conn, trades))
    finally:
        session.close()


def install_outbox() -> None:
    """Make every session of this process enqueue the notifications of the facts it flushes.

    Idempotent; call it once in each process that records facts (the head node, the risk
    actor, the bot actors).
    """
    global _installed  # noqa: PLW0603 (one registration per process)
    with _install_lock:
        if not _installed:
            event.listen(Session, "after_flush", _after_flush)
            _installed = True


def admin_ids(conn: Connection) -> list[int]:
    """The active admins: who receives system alerts."""
    return list(
        conn.execute(
            select(User.id).where(User.role == "admin", User.is_active.is_(True)).order_by(User.id)
        ).scalars()
    )


def enqueue_admins(target: Session | Connection, ev: Event) -> int:
    """Enqueue a system alert for every active admin's channels; return the rows written.

    Nothing happens on a database without the outbox's tables.
    """
    conn = _connection(target)
    if not outbox_ready(conn):
        return 0
    return enqueue_many(conn, [(user_id, ev) for user_id in admin_ids(conn)])


_ORDER_EVENTS = {"rejected": EventType.ORDER_REJECTED, "canceled": EventType.ORDER_CANCELED}


def enqueue_order_updates(conn: Connection, updates: dict[int, dict[str, Any]]) -> int:
    """Enqueue the orders a Core ``UPDATE`` just made rejected or canceled (same transaction).

    ``updates`` maps an order's primary key to the values written (``status`` among them), as
    :mod:`cryptoorchestrator.platform.bots.records` builds them.  Only orders whose stored
    status now is that one are notified (the update is guarded by the order state machine);
    the key ``order:<id>:<status>`` makes a repeated answer notify once.  Nothing happens in a
    process without the outbox.
    """
    ids = [pk for pk, values in updates.items() if values.get("status") in _ORDER_EVENTS]
    if not _installed or not ids or not outbox_ready(conn):
        return 0
    found = conn.execute(
        select(
            Order.id,
            Order.bot_id,
            Order.client_order_id,
            Order.symbol,
            Order.side,
            Order.amount,
            Order.filled,
            Order.status,
            Order.status_reason,
            Bot.user_id,
            Bot.name,
        )
        .join(Bot, Bot.id == Order.bot_id)
        .where(Order.id.in_(ids))
        .order_by(Order.id)
    ).all()
    items: list[tuple[int, Event]] = []
    for row in found:
        kind = _ORDER_EVENTS.get(row.status)
        if kind is None or updates[row.id].get("status") != row.status:
            continue
        side, amount, filled = row.side.upper(), _num(row.amount), _num(row.filled)
        reason = f": {row.status_reason}" if row.status_reason else ""
        items.append(
            (
                row.user_id,
                Event(
                    type=kind,
                    key=f"order:{row.id}:{row.status}",
                    title=f"{row.name}: {side} {amount} {row.symbol} {row.status}",
                    text=f"Order {row.client_order_id} ({side} {amount} {row.symbol}) "
                    f"{row.status}, {filled} filled{reason}",
                    at=utcnow(),
                    data={
                        "botId": row.bot_id,
                        "orderId": row.id,
                        "clientOrderId": row.client_order_id,
                        "symbol": row.symbol,
                        "side": row.side,
                        "amount": amount,
                        "filled": filled,
                        "status": row.status,
                        "reason": row.status_reason,
                    },
                ),
            )
        )
    return enqueue_many(conn, items)
