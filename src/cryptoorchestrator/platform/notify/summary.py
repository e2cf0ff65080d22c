"""The daily summary: once a day, at the local time a channel chose, the user's last 24 hours.

A channel with ``daily_summary_at`` (``HH:MM`` in the channel's ``timezone``; None: off) gets
one ``summary.daily`` event per local day, once that time has passed: realized P&L, fees and
the number of fills of the channel's bots (its bot filter, else all the user's bots) over the
24 hours ending at the chosen time, and their open positions when it is written.  The
dispatcher's loop calls :func:`enqueue_daily_summaries`; the key
``summary:<channel>:<local date>`` makes it once per day per channel however many passes or
replicas see it due.  A dispatcher that was away at the chosen time sends the day's summary
when it comes back the same local day; days it missed entirely are not made up.  A summary is
held by the channel's quiet hours like any other non-critical event.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.notify.events import Event, EventType
from cryptoorchestrator.platform.notify.outbox import (
    insert_rows,
    outbox_ready,
    outbox_row,
    quiet_hours_of,
)
from cryptoorchestrator.platform.notify.subscriptions import (
    QuietHours,
    check_daily_summary,
    check_timezone,
)
from cryptoorchestrator.platform.storage.models import (
    Bot,
    Notification,
    NotificationChannel,
    Position,
    Trade,
)

_ZERO = Decimal(0)


@dataclass(frozen=True)
class Due:
    """A channel whose summary of ``day`` is due: the window it covers, in UTC."""

    channel_id: int
    user_id: int
    bot_ids: list[int] | None
    day: date
    start: datetime
    end: datetime
    quiet: QuietHours | None

    @property
    def key(self) -> str:
        """The summary's stable key."""
        return f"summary:{self.channel_id}:{self.day.isoformat()}"


def summary_due(at: str, zone_name: str, now: datetime) -> tuple[date, datetime] | None:
    """Return the local day whose summary is due at ``now`` and its moment (UTC), if any.

    ``at`` is ``HH:MM`` in zone ``zone_name``; the summary of a local day is due from that
    moment until the day ends.
    """
    zone = check_timezone(zone_name)
    hhmm = check_daily_summary(at)
    if hhmm is None:
        return None
    local = now.astimezone(zone)
    hour, minute = int(hhmm[:2]), int(hhmm[3:])
    # A wall-clock time in the zone: on a DST day the moment moves with the clocks.
    moment = datetime(local.year, local.month, local.day, hour, minute, tzinfo=zone)
    if local < moment:
        return None
    return local.date(), moment.astimezone(now.tzinfo)


def due_summaries(conn: Connection, now: datetime) -> list[Due]:
    """The enabled channels whose summary of today (their local day) is due and not written."""
    channels = conn.execute(
        select(
            NotificationChannel.id,
            NotificationChannel.user_id,
            NotificationChannel.bot_ids,
            NotificationChannel.daily_summary_at,
            NotificationChannel.timezone,
            NotificationChannel.quiet_start,
            NotificationChannel.quiet_end,
        ).where(
            NotificationChannel.daily_summary_at.is_not(None),
            NotificationChannel.enabled.is_(True),
        )
    ).all()
    found: list[Due] = []
    for c in channels:
        try:
            when = summary_due(c.daily_summary_at, c.timezone or "UTC", now)
        except InvalidInputError:  # a row edited by hand: no summary rather than a failed pass
            continue
        if when is None:
            continue
        day, end = when
        found.append(
            Due(
                channel_id=c.id,
                user_id=c.user_id,
                bot_ids=c.bot_ids,
                day=day,
                start=end - timedelta(hours=24),
                end=end,
                quiet=quiet_hours_of(c.quiet_start, c.quiet_end, c.timezone),
            )
        )
    if not found:
        return []
    written = {
        (channel_id, key)
        for channel_id, key in conn.execute(
            select(Notification.channel_id, Notification.event_key).where(
                Notification.channel_id.in_({d.channel_id for d in found}),
                Notification.event_key.in_({d.key for d in found}),
            )
        )
    }
    return [d for d in found if (d.channel_id, d.key) not in written]


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def summary_event(conn: Connection, due: Due) -> Event:
    """Build the summary of ``due``'s window from the trades and positions of its bots."""
    query = select(Bot.id, Bot.name).where(Bot.user_id == due.user_id)
    if due.bot_ids is not None:
        query = query.where(Bot.id.in_(due.bot_ids))
    bots: dict[int, str] = {b: n for b, n in conn.execute(query.order_by(Bot.id))}
    per_bot: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"trades": 0, "realizedPnl": _ZERO, "fees": _ZERO}
    )
    positions: list[Any] = []
    if bots:
        # Summed here, not in SQL: SQLite keeps money as text, and its SUM goes through floats.
        for bot_id, pnl, fee in conn.execute(
            select(Trade.bot_id, Trade.realized_pnl, Trade.fee).where(
                Trade.bot_id.in_(bots), Trade.timestamp >= due.start, Trade.timestamp < due.end
            )
        ):
            if bot_id is None:
                continue
            stats = per_bot[bot_id]
            stats["trades"] += 1
            stats["realizedPnl"] += pnl or _ZERO
            stats["fees"] += fee or _ZERO
        positions = [
            p
            for p in conn.execute(
                select(Position.bot_id, Position.symbol, Position.amount, Position.average_price)
                .where(Position.bot_id.in_(bots))
                .order_by(Position.bot_id, Position.symbol)
            )
            if p.amount
        ]
    trades = sum(int(v["trades"]) for v in per_bot.values())
    pnl = sum((v["realizedPnl"] for v in per_bot.values()), _ZERO)
    fees = sum((v["fees"] for v in per_bot.values()), _ZERO)
    open_positions = [
        {
            "botId": p.bot_id,
            "bot": bots.get(p.bot_id),
            "symbol": p.symbol,
            "amount": _num(p.amount),
            "averagePrice": _num(p.average_price),
        }
        for p in positions
    ]
    held = ", ".join(f"{p['bot']} {p['amount']} {p['symbol']}" for p in open_positions[:10])
    return Event(
        type=EventType.SUMMARY_DAILY,
        key=due.key,
        title=f"Daily summary {due.day.isoformat()}: P&L {_num(pnl)}, {trades} trade(s), "
        f"{len(open_positions)} open position(s)",
        text=f"Last 24 h of {len(bots)} bot(s): realized P&L {_num(pnl)} (fees {_num(fees)}), "
        f"{trades} trade(s). Open positions: {held or 'none'}.",
        at=due.end,
        data={
            "date": due.day.isoformat(),
            "from": due.start.isoformat(),
            "to": due.end.isoformat(),
            "bots": len(bots),
            "trades": trades,
            "realizedPnl": _num(pnl),
            "fees": _num(fees),
            "openPositions": open_positions,
            "perBot": {
                str(b): {
                    "name": bots[b],
                    "trades": per_bot[b]["trades"],
                    "realizedPnl": _num(per_bot[b]["realizedPnl"]),
                }
                for b in bots
                if b in per_bot
            },
        },
    )


def enqueue_daily_summaries(target: Session | Connection, now: datetime) -> int:
    """Write the due daily summaries (one row each, for its own channel); return the rows.

    The caller commits.  Nothing happens on a database without the outbox's tables.
    """
    conn = target.connection() if isinstance(target, Session) else target
    if not outbox_ready(conn):
        return 0
    rows = [
        outbox_row(d.channel_id, d.user_id, summary_event(conn, d), d.quiet, now)
        for d in due_summaries(conn, now)
    ]
    return insert_rows(conn, rows)
