"""Enumerations stored in the database and shown by the API (their values are the wire format)."""

from __future__ import annotations

from enum import StrEnum


class OrderSide(StrEnum):
    """Side of an order or fill."""

    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """Order types the execution clients support."""

    MARKET = "market"
    LIMIT = "limit"
    #: A resting stop-loss market order (Binance spot ``STOP_LOSS``): a market order sent by
    #: the exchange once the traded price reaches ``stop_price``.
    STOP_LOSS = "stop_loss"


class OrderStatus(StrEnum):
    """Life cycle of an order; ``INTENT`` is persisted before anything is sent.

    The moves between statuses are the order state machine's
    (:mod:`cryptoorchestrator.platform.model.orders`); every status write is guarded by it.
    """

    INTENT = "intent"
    SUBMITTED = "submitted"
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    DENIED = "denied"

    @property
    def is_final(self) -> bool:
        """Whether no further fills can arrive."""
        return self in _FINAL


_FINAL = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.DENIED}

#: Stored values of the statuses an order can still leave (reconciliation, open-order counts).
OPEN_ORDER_STATUSES: tuple[str, ...] = tuple(s.value for s in OrderStatus if s not in _FINAL)


class BotStatus(StrEnum):
    """Bot status words, exactly as the users' troubleshooting guide shows them."""

    STARTING = "Starting"
    RUNNING = "Running"
    STOPPED = "Stopped"
    ERROR = "Error"


class BotMode(StrEnum):
    """Whether a bot trades real money or a virtual balance."""

    PAPER = "paper"
    LIVE = "live"


class RunStatus(StrEnum):
    """Status of a backtest or optimization run."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
