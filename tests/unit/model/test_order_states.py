"""The order state machine: every (status, event) pair of the table, allowed or refused."""

from __future__ import annotations

import itertools

import pytest

from cryptoorchestrator.platform.errors import ConflictError, IllegalOrderTransitionError
from cryptoorchestrator.platform.model import OrderStatus
from cryptoorchestrator.platform.model import orders as lifecycle
from cryptoorchestrator.platform.model.enums import OPEN_ORDER_STATUSES

S = OrderStatus
EVENTS: list[type[lifecycle.OrderEvent]] = [
    lifecycle.OrderSubmitted,
    lifecycle.OrderDenied,
    lifecycle.OrderAccepted,
    lifecycle.OrderPartiallyFilled,
    lifecycle.OrderFilled,
    lifecycle.OrderCanceled,
    lifecycle.OrderExpired,
    lifecycle.OrderRejected,
]
BEFORE_EXCHANGE = {S.INTENT, S.SUBMITTED}
LIVE = {S.INTENT, S.SUBMITTED, S.OPEN, S.PARTIALLY_FILLED}
FINAL = {S.FILLED, S.CANCELED, S.REJECTED, S.DENIED}

#: The specification, written out apart from the module's table: event -> (arrives in, moves to).
SPEC: dict[type[lifecycle.OrderEvent], tuple[set[OrderStatus], OrderStatus]] = {
    lifecycle.OrderSubmitted: (BEFORE_EXCHANGE, S.SUBMITTED),
    lifecycle.OrderDenied: ({S.INTENT}, S.DENIED),
    lifecycle.OrderAccepted: ({S.INTENT, S.SUBMITTED, S.OPEN}, S.OPEN),
    lifecycle.OrderPartiallyFilled: (LIVE, S.PARTIALLY_FILLED),
    lifecycle.OrderFilled: (LIVE, S.FILLED),
    lifecycle.OrderCanceled: (LIVE, S.CANCELED),
    lifecycle.OrderExpired: ({S.SUBMITTED, S.OPEN, S.PARTIALLY_FILLED}, S.CANCELED),
    lifecycle.OrderRejected: ({S.INTENT, S.SUBMITTED, S.OPEN}, S.REJECTED),
}
PAIRS = list(itertools.product(OrderStatus, EVENTS))
ALLOWED = [(s, e) for s, e in PAIRS if s in SPEC[e][0]]
REFUSED = [(s, e) for s, e in PAIRS if s not in SPEC[e][0]]


def _id(value: object) -> str:
    return value.__name__ if isinstance(value, type) else str(value)


def test_the_specification_covers_every_event_and_status() -> None:
    assert set(SPEC) == set(lifecycle.TRANSITIONS) == set(EVENTS)
    assert set(FINAL) | LIVE == set(OrderStatus)
    assert len(ALLOWED) + len(REFUSED) == len(OrderStatus) * len(EVENTS)


@pytest.mark.parametrize(("status", "event"), ALLOWED, ids=_id)
def test_an_allowed_event_moves_the_order(
    status: OrderStatus, event: type[lifecycle.OrderEvent]
) -> None:
    target = SPEC[event][1]
    assert lifecycle.apply(status, event("co1-0-L")) is target
    assert lifecycle.apply(status.value, event) is target  # a stored value, the class
    assert lifecycle.can_move(status, target)
    assert status in lifecycle.may_precede(target)
    assert status.value in lifecycle.applies_in(event)


@pytest.mark.parametrize(("status", "event"), REFUSED, ids=_id)
def test_a_refused_event_raises_a_typed_error(
    status: OrderStatus, event: type[lifecycle.OrderEvent]
) -> None:
    with pytest.raises(IllegalOrderTransitionError) as err:
        lifecycle.apply(status, event("co1-0-L", "late"))
    assert isinstance(err.value, ConflictError)
    assert err.value.status == status.value
    assert err.value.event == event.__name__
    assert err.value.allowed == tuple(s.value for s in OrderStatus if s in SPEC[event][0])
    assert status.value in str(err.value)
    assert err.value.to_dict()["code"] == "illegal_order_transition"
    assert status.value not in lifecycle.applies_in(event)


@pytest.mark.parametrize("final", sorted(FINAL), ids=_id)
def test_a_final_order_accepts_no_event(final: OrderStatus) -> None:
    assert final.is_final
    assert final.value not in OPEN_ORDER_STATUSES
    for target in OrderStatus:
        assert not lifecycle.can_move(final, target)
        assert final not in lifecycle.may_precede(target)


def test_nothing_leads_back_to_an_intent() -> None:
    assert lifecycle.may_precede(S.INTENT) == ()
    assert lifecycle.may_precede_values(S.INTENT) == ()
    assert not lifecycle.can_move(S.SUBMITTED, S.INTENT)


@pytest.mark.parametrize("target", list(OrderStatus), ids=_id)
def test_may_precede_is_the_union_of_the_events_reaching_a_status(target: OrderStatus) -> None:
    expected = set().union(*(before for before, to in SPEC.values() if to is target))
    assert set(lifecycle.may_precede(target)) == expected
    # in the enum's order, so the SQL built from it is the same statement every time
    assert list(lifecycle.may_precede(target)) == [s for s in OrderStatus if s in expected]
    assert lifecycle.may_precede_values(target) == tuple(
        s.value for s in lifecycle.may_precede(target)
    )
    for status in OrderStatus:
        assert lifecycle.can_move(status.value, target.value) is (status in expected)


def test_the_table_is_closed_under_composition() -> None:
    """A batch merging two answers for one order guards on the status the first found."""
    for a, b, c in itertools.product(OrderStatus, repeat=3):
        if lifecycle.can_move(a, b) and lifecycle.can_move(b, c):
            assert lifecycle.can_move(a, c), (a, b, c)


@pytest.mark.parametrize("status", [s for s in OrderStatus if s is not S.INTENT], ids=_id)
def test_an_exchange_report_is_the_event_of_its_status(status: OrderStatus) -> None:
    event = lifecycle.reported(status, "co1-0-L")
    assert event.status is status
    assert event.client_order_id == "co1-0-L"


def test_no_exchange_reports_an_intent() -> None:
    with pytest.raises(IllegalOrderTransitionError, match="intent"):
        lifecycle.reported(S.INTENT, "co1-0-L")


def test_events_are_values() -> None:
    a = lifecycle.OrderFilled("co1-0-L", "done")
    assert a == lifecycle.OrderFilled("co1-0-L", "done")
    assert a != lifecycle.OrderCanceled("co1-0-L", "done")
    with pytest.raises(AttributeError):
        a.reason = "changed"  # type: ignore[misc]
