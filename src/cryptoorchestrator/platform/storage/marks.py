"""The "submitted" mark on a bot's order intents: the one write between approval and sending.

Written by the trading loop's batched writes just before orders go out, and by the paper
exchange inside the transaction that books them (the order then reaches the book and is marked
at once).  One definition, so both write the same columns the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Table, select, update

from cryptoorchestrator.platform.model import OrderStatus
from cryptoorchestrator.platform.model.orders import may_precede_values
from cryptoorchestrator.platform.storage.models import Order

_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_MAY_BE_SUBMITTED = may_precede_values(OrderStatus.SUBMITTED)


def mark_submitted(conn: Connection, items: Sequence[tuple[str, str]], now: datetime) -> set[str]:
    """Mark ``(client order id, reason)`` intents submitted at ``now``, one statement per reason.

    Returns the client order ids that are not stored (nothing was marked for them); the caller
    decides whether that fails its transaction.  The write is guarded by the order state
    machine (:mod:`cryptoorchestrator.platform.model.orders`): only an intent, or an order
    submitted before and being resent, is marked; an order that moved on (open, filled,
    canceled...) stays as it is.
    """
    by_reason: dict[str, list[str]] = defaultdict(list)
    for cid, reason in items:
        by_reason[reason].append(cid)
    column = _ORDERS.c.client_order_id
    missing: set[str] = set()
    for reason, cids in by_reason.items():
        result = conn.execute(
            update(_ORDERS)
            .where(column.in_(cids), _ORDERS.c.status.in_(_MAY_BE_SUBMITTED))
            .values(status=OrderStatus.SUBMITTED.value, status_reason=reason, submitted_at=now)
        )
        if result.rowcount != len(set(cids)):
            stored = set(conn.execute(select(column).where(column.in_(cids))).scalars())
            missing.update(set(cids) - stored)
    return missing


__all__ = ["mark_submitted"]
