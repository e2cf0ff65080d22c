"""An order's life cycle: the events that move it and the one state machine they obey.

Every write of an order's status (the trading loop's marks and recorded answers, the paper
exchange's book) is an event applied here, and every such SQL write is guarded by the statuses
the event may arrive in (``WHERE status IN (...)``, see :func:`may_precede`).  So an answer
that arrives late or out of order cannot move a final order (filled, canceled, rejected,
denied) anywhere, nor an order the exchange holds back to an intent.

The life cycle (the stored values of :class:`~cryptoorchestrator.platform.model.enums.
OrderStatus`), as the statuses each event may arrive in::

    event                 arrives in                                  moves to
    OrderSubmitted        INTENT, SUBMITTED                           SUBMITTED
    OrderDenied           INTENT                                      DENIED
    OrderAccepted         INTENT, SUBMITTED, OPEN                     OPEN
    OrderPartiallyFilled  INTENT, SUBMITTED, OPEN, PARTIALLY_FILLED   PARTIALLY_FILLED
    OrderFilled           INTENT, SUBMITTED, OPEN, PARTIALLY_FILLED   FILLED
    OrderCanceled         INTENT, SUBMITTED, OPEN, PARTIALLY_FILLED   CANCELED
    OrderExpired          SUBMITTED, OPEN, PARTIALLY_FILLED           CANCELED
    OrderRejected         INTENT, SUBMITTED, OPEN                     REJECTED

* ``INTENT`` is stored before anything leaves the process.  The risk gate denies it
  (``OrderDenied``), or it is marked ``SUBMITTED`` just before the request goes out.
* ``SUBMITTED`` may be submitted again (``SUBMITTED -> SUBMITTED``): an order the exchange never
  received is resent under the same client order id, which the exchange deduplicates.  There is
  no way back to ``INTENT``.
* ``OPEN`` and ``PARTIALLY_FILLED`` may be reported again (the exchange's repeated answers, more
  fills).
* The exchange's word on an order is taken from any status before it, ``INTENT`` included: an
  order the exchange holds or filled evidently was submitted (a row stored as an intent by an
  earlier version of the loop, say).
* An intent that never left (not sent, or stale after a restart) is ``OrderCanceled``; an
  exchange that expires an order is ``OrderExpired``, stored as ``CANCELED`` (as ccxt reports an
  expiry; the platform keeps no separate status for it).
* Final statuses accept no event at all.

The table is closed under composition: whenever ``a -> b`` and ``b -> c`` are allowed, so is
``a -> c``.  A batch that merges two answers for one order can therefore guard its single write
on the status the first answer found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cryptoorchestrator.platform.errors import IllegalOrderTransitionError
from cryptoorchestrator.platform.model.enums import OrderStatus

_INTENT = OrderStatus.INTENT
_SUBMITTED = OrderStatus.SUBMITTED
_OPEN = OrderStatus.OPEN
_PARTIAL = OrderStatus.PARTIALLY_FILLED


@dataclass(frozen=True)
class OrderEvent:
    """Something that happened to one order (named in the past tense).

    Parameters
    ----------
    client_order_id
        The order's client order id.
    reason
        Why, in words (stored as the order's ``status_reason`` where the writer keeps one).
    """

    client_order_id: str
    reason: str | None = None

    #: The status the event moves the order to.
    status: ClassVar[OrderStatus]


@dataclass(frozen=True)
class OrderSubmitted(OrderEvent):
    """The order is about to leave for the exchange (or leaves again, under the same id)."""

    status = OrderStatus.SUBMITTED


@dataclass(frozen=True)
class OrderDenied(OrderEvent):
    """The risk gate refused the intent; it never leaves the process."""

    status = OrderStatus.DENIED


@dataclass(frozen=True)
class OrderAccepted(OrderEvent):
    """The exchange holds the order, nothing of it filled yet."""

    status = OrderStatus.OPEN


@dataclass(frozen=True)
class OrderPartiallyFilled(OrderEvent):
    """Part of the order filled (or not every fill of a finished order is stored yet)."""

    status = OrderStatus.PARTIALLY_FILLED


@dataclass(frozen=True)
class OrderFilled(OrderEvent):
    """The whole order filled, every fill stored."""

    status = OrderStatus.FILLED


@dataclass(frozen=True)
class OrderCanceled(OrderEvent):
    """The order was canceled: by the exchange on request, or an intent that never left."""

    status = OrderStatus.CANCELED


@dataclass(frozen=True)
class OrderExpired(OrderEvent):
    """The exchange expired the order (stored as ``CANCELED``, as ccxt reports it)."""

    status = OrderStatus.CANCELED


@dataclass(frozen=True)
class OrderRejected(OrderEvent):
    """The order was refused: by the exchange, or by our own checks before sending."""

    status = OrderStatus.REJECTED


#: For each event, the statuses it may arrive in (the transition table).
TRANSITIONS: dict[type[OrderEvent], frozenset[OrderStatus]] = {
    OrderSubmitted: frozenset({_INTENT, _SUBMITTED}),
    OrderDenied: frozenset({_INTENT}),
    OrderAccepted: frozenset({_INTENT, _SUBMITTED, _OPEN}),
    OrderPartiallyFilled: frozenset({_INTENT, _SUBMITTED, _OPEN, _PARTIAL}),
    OrderFilled: frozenset({_INTENT, _SUBMITTED, _OPEN, _PARTIAL}),
    OrderCanceled: frozenset({_INTENT, _SUBMITTED, _OPEN, _PARTIAL}),
    OrderExpired: frozenset({_SUBMITTED, _OPEN, _PARTIAL}),
    OrderRejected: frozenset({_INTENT, _SUBMITTED, _OPEN}),
}

#: The event an exchange's reported status stands for (what adopting an answer applies).
_REPORTED: dict[OrderStatus, type[OrderEvent]] = {
    OrderStatus.SUBMITTED: OrderSubmitted,
    OrderStatus.OPEN: OrderAccepted,
    OrderStatus.PARTIALLY_FILLED: OrderPartiallyFilled,
    OrderStatus.FILLED: OrderFilled,
    OrderStatus.CANCELED: OrderCanceled,
    OrderStatus.REJECTED: OrderRejected,
    OrderStatus.DENIED: OrderDenied,
}

_PRECEDING: dict[OrderStatus, tuple[OrderStatus, ...]] = {
    target: tuple(
        s
        for s in OrderStatus
        if any(s in before for event, before in TRANSITIONS.items() if event.status is target)
    )
    for target in OrderStatus
}


def _event_name(event: OrderEvent | type[OrderEvent]) -> str:
    return (event if isinstance(event, type) else type(event)).__name__


def apply(status: OrderStatus | str, event: OrderEvent | type[OrderEvent]) -> OrderStatus:
    """Return the status ``event`` moves an order in ``status`` to.

    Parameters
    ----------
    status
        The order's current status (an :class:`OrderStatus` or its stored value).
    event
        The event, or its class.

    Raises
    ------
    IllegalOrderTransitionError
        The event may not arrive in ``status`` (every final status refuses every event).
    """
    current = OrderStatus(status)
    kind = event if isinstance(event, type) else type(event)
    before = TRANSITIONS[kind]
    if current not in before:
        allowed = [s.value for s in OrderStatus if s in before]
        raise IllegalOrderTransitionError(current.value, _event_name(kind), allowed)
    return kind.status


def can_move(status: OrderStatus | str, target: OrderStatus | str) -> bool:
    """Whether some event moves an order from ``status`` to ``target``."""
    return OrderStatus(status) in _PRECEDING[OrderStatus(target)]


def may_precede(target: OrderStatus | str) -> tuple[OrderStatus, ...]:
    """Return the statuses from which ``target`` may be reached, in the enum's order.

    The guard of a status write: ``UPDATE orders SET status = :target WHERE ... AND status IN
    (may_precede(target))`` leaves an order that moved on meanwhile as it is.
    """
    return _PRECEDING[OrderStatus(target)]


def may_precede_values(target: OrderStatus | str) -> tuple[str, ...]:
    """Return :func:`may_precede` as stored values (for SQL ``IN`` lists)."""
    return tuple(s.value for s in _PRECEDING[OrderStatus(target)])


def applies_in(event: OrderEvent | type[OrderEvent]) -> tuple[str, ...]:
    """Return the stored values of the statuses ``event`` may arrive in, in the enum's order.

    The guard of the write that records one event: ``UPDATE orders SET status = :new WHERE ...
    AND status IN (applies_in(event))``.
    """
    kind = event if isinstance(event, type) else type(event)
    before = TRANSITIONS[kind]
    return tuple(s.value for s in OrderStatus if s in before)


def reported(status: OrderStatus | str, client_order_id: str) -> OrderEvent:
    """Return the event an exchange's answer in ``status`` stands for.

    Raises
    ------
    IllegalOrderTransitionError
        ``status`` is ``INTENT``: no exchange reports an order it has not been sent.
    """
    current = OrderStatus(status)
    kind = _REPORTED.get(current)
    if kind is None:
        raise IllegalOrderTransitionError(current.value, "a report of the exchange", ())
    return kind(client_order_id)


__all__ = [
    "TRANSITIONS",
    "OrderAccepted",
    "OrderCanceled",
    "OrderDenied",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderPartiallyFilled",
    "OrderRejected",
    "OrderSubmitted",
    "applies_in",
    "apply",
    "can_move",
    "may_precede",
    "may_precede_values",
    "reported",
]
