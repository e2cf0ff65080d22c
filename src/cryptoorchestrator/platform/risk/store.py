"""Persistence of risk state: limits, risk events, and rebuilding the manager after a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.model.enums import OPEN_ORDER_STATUSES
from cryptoorchestrator.platform.risk.limits import (
    Breach,
    RiskLimits,
    UserRiskLimits,
    user_scope,
)
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.storage.models import (
    Bot,
    EquitySnapshot,
    Order,
    Position,
    RiskEvent,
    RiskLimit,
)

PORTFOLIO = "portfolio"
USER_PREFIX = "user:"


def _values(rows: Any, model: type[RiskLimits] | type[UserRiskLimits]) -> dict[str, Any]:
    """Turn stored rows into field values of ``model`` (unknown names are ignored)."""
    values: dict[str, Any] = {}
    fields = model.model_fields
    for row in rows:
        if row.name not in fields:
            continue  # a limit removed from the code; keep the row, ignore it
        annotation = fields[row.name].annotation
        kinds = get_args(annotation) or (annotation,)  # ``int | None`` -> (int, NoneType)
        if bool in kinds:
            values[row.name] = row.value != 0
        elif int in kinds:
            values[row.name] = int(row.value)
        else:
            values[row.name] = row.value
    return values


def load_limits(session: Session) -> RiskLimits:
    """Return the stored portfolio limits (defaults for any limit never set)."""
    rows = session.scalars(select(RiskLimit).where(RiskLimit.scope == PORTFOLIO)).all()
    return RiskLimits(**_values(rows, RiskLimits))


def load_user_limits(session: Session) -> dict[int, UserRiskLimits]:
    """Return every user's own limits, by user id (scope ``user:<id>``)."""
    rows = session.scalars(select(RiskLimit).where(RiskLimit.scope.like(f"{USER_PREFIX}%"))).all()
    by_user: dict[int, list[RiskLimit]] = {}
    for row in rows:
        suffix = row.scope[len(USER_PREFIX) :]
        if suffix.isdigit():
            by_user.setdefault(int(suffix), []).append(row)
    return {uid: UserRiskLimits(**_values(found, UserRiskLimits)) for uid, found in by_user.items()}


def _upsert(session: Session, scope: str, values: dict[str, Any], by: int | None) -> None:
    """Store ``values`` under ``scope`` (upsert by name; ``None`` deletes the row)."""
    existing = {
        row.name: row
        for row in session.scalars(select(RiskLimit).where(RiskLimit.scope == scope)).all()
    }
    for name, value in values.items():
        row = existing.get(name)
        if value is None:
            if row is not None:
                session.delete(row)
            continue
        number = Decimal(int(value)) if isinstance(value, bool | int) else Decimal(value)
        if row is None:
            session.add(RiskLimit(scope=scope, name=name, value=number, updated_by=by))
        elif row.value != number:
            row.value = number
            row.updated_by = by


def save_limits(session: Session, limits: RiskLimits, *, user_id: int | None = None) -> None:
    """Store every portfolio limit (upsert by name); ``user_id`` is who changed them."""
    _upsert(session, PORTFOLIO, limits.model_dump(), user_id)


def save_user_limits(
    session: Session, owner_id: int, limits: UserRiskLimits, *, user_id: int | None = None
) -> None:
    """Store ``owner_id``'s own limits under scope ``user:<id>`` (unset ones are removed).

    ``user_id`` is who changed them (the owner, or an operator).
    """
    _upsert(session, user_scope(owner_id), limits.model_dump(), user_id)


def record_breach(session: Session, breach: Breach) -> RiskEvent:
    """Store a breach as a risk event."""
    event = RiskEvent(
        bot_id=breach.bot_id,
        kind="breach",
        limit_name=breach.limit,
        message=breach.message,
        details=breach.details,
    )
    session.add(event)
    return event


def record_event(
    session: Session,
    kind: str,
    message: str,
    *,
    bot_id: int | None = None,
    limit_name: str | None = None,
    details: dict[str, Any] | None = None,
) -> RiskEvent:
    """Store a denial, a kill switch or another risk event."""
    event = RiskEvent(
        bot_id=bot_id, kind=kind, limit_name=limit_name, message=message, details=details
    )
    session.add(event)
    return event


def rebuild(session: Session, manager: RiskManager) -> int:
    """Rebuild the manager's view of every active bot from the database; return how many.

    Equity comes from each bot's latest snapshot (its starting balance if it has none yet), the
    peak from its highest snapshot, the day's start from the first snapshot of the UTC day,
    positions from the positions table at their average price, open orders from orders not yet
    final.
    """
    manager.set_limits(load_limits(session))
    for owner_id, own in load_user_limits(session).items():
        manager.set_user_limits(owner_id, own)
    bots = session.scalars(
        select(Bot).where(
            (Bot.desired_state == "running")
            | Bot.status.in_([BotStatus.RUNNING.value, BotStatus.STARTING.value])
        )
    ).all()
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for bot in bots:
        latest = session.scalars(
            select(EquitySnapshot)
            .where(EquitySnapshot.bot_id == bot.id)
            .order_by(EquitySnapshot.timestamp.desc())
            .limit(1)
        ).first()
        equity = latest.equity if latest else (bot.starting_balance or Decimal(0))
        # Computed in Python: SQLite stores exact decimals as text, where MAX compares strings.
        history = session.scalars(
            select(EquitySnapshot.equity).where(EquitySnapshot.bot_id == bot.id)
        ).all()
        peak = max([equity, *history])
        first_today = session.scalars(
            select(EquitySnapshot)
            .where(EquitySnapshot.bot_id == bot.id, EquitySnapshot.timestamp >= day_start)
            .order_by(EquitySnapshot.timestamp)
            .limit(1)
        ).first()
        positions = {
            p.symbol: p.amount * p.average_price
            for p in session.scalars(select(Position).where(Position.bot_id == bot.id)).all()
            if p.amount != 0
        }
        open_orders = set(
            session.scalars(
                select(Order.client_order_id).where(
                    Order.bot_id == bot.id, Order.status.in_(OPEN_ORDER_STATUSES)
                )
            ).all()
        )
        manager.register_bot(
            bot.id,
            equity=equity,
            max_position_pct=bot.max_position_size,
            risk_per_trade_pct=bot.risk_per_trade,
            peak_equity=peak,
            day_start_equity=first_today.equity if first_today else equity,
            positions=positions,
            open_orders=open_orders,
            user_id=bot.user_id,
        )
    return len(bots)
