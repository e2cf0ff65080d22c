"""Accounts of the simulated exchange: how they are specified, and their balances, orders, fills.

Amounts are exact Decimals throughout.  Each record knows how Binance shows it (``to_wire``);
:mod:`cryptoorchestrator.platform.exchange.sim.matching` changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.sim.wire import fmt

#: Default credentials for local use only (the simulator holds no real money).
DEFAULT_API_KEY = "cryptoorch-sim-key"
DEFAULT_API_SECRET = "cryptoorch-sim-secret"  # noqa: S105  (a documented local default)


class SimAccountSpec(BaseModel):
    """Credentials and starting balances of one simulated account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str = DEFAULT_API_KEY
    api_secret: SecretStr = SecretStr(DEFAULT_API_SECRET)
    balances: dict[str, Decimal] = Field(default_factory=lambda: {"USDT": Decimal(10_000)})


def parse_balances(items: Sequence[str]) -> dict[str, Decimal]:
    """Return ``{"USDT": Decimal("10000")}`` from CLI words like ``USDT=10000``.

    Raises
    ------
    InvalidInputError
        If a word is not ``ASSET=amount`` with a non-negative amount.
    """
    out: dict[str, Decimal] = {}
    for item in items:
        asset, sep, amount = item.partition("=")
        try:
            value = Decimal(amount.strip())
        except ArithmeticError:
            value = Decimal(-1)
        if not sep or not asset.strip().isalnum() or not value.is_finite() or value < 0:
            raise InvalidInputError("--balance", f"expected ASSET=amount, got {item!r}")
        out[asset.strip().upper()] = value
    return out


@dataclass(repr=False)
class SimAccount:
    """One API key's spot account: secret, balances (free, locked), orders and trades."""

    api_key: str
    secret: str
    free: dict[str, Decimal] = field(default_factory=dict)
    locked: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[int, SimOrder] = field(default_factory=dict)
    by_client_id: dict[str, int] = field(default_factory=dict)
    trades: list[SimFill] = field(default_factory=list)
    update_time: int = 0

    def __repr__(self) -> str:
        # The secret never appears in logs or tracebacks.
        return f"SimAccount(api_key={self.api_key!r}, assets={sorted(self.free)})"

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        """Return ``(free, locked)`` of ``asset``."""
        return self.free.get(asset, Decimal(0)), self.locked.get(asset, Decimal(0))

    def move(self, asset: str, *, free: Decimal = Decimal(0), locked: Decimal = Decimal(0)) -> None:
        """Add ``free`` and ``locked`` (either may be negative) to ``asset``'s balance."""
        self.free[asset] = self.free.get(asset, Decimal(0)) + free
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + locked


@dataclass
class SimOrder:
    """An order as the simulated exchange keeps it (Binance's fields, Decimal amounts)."""

    order_id: int
    client_order_id: str
    market_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    time: int
    orig_quote_qty: Decimal = Decimal(0)
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    status: str = "NEW"
    update_time: int = 0
    locked_left: Decimal = Decimal(0)
    last_fill_candle: int = -1
    fills: list[SimFill] = field(default_factory=list)
    stop_price: Decimal = Decimal(0)

    @property
    def remaining(self) -> Decimal:
        """Return the quantity still to fill."""
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        """Return whether the order can still fill."""
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def to_wire(self) -> dict[str, Any]:
        """Return the order as GET /api/v3/order answers it."""
        return {
            "symbol": self.market_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": fmt(self.price),
            "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed_qty),
            "cummulativeQuoteQty": fmt(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": fmt(self.stop_price),
            "icebergQty": fmt(Decimal(0)),
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": True,
            "workingTime": self.time,
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def to_new_order_response(self, resp_type: str) -> dict[str, Any]:
        """Return the order as POST /api/v3/order answers it (ACK, RESULT or FULL)."""
        ack = {
            "symbol": self.market_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "transactTime": self.time,
        }
        if resp_type == "ACK":
            return ack
        wire = self.to_wire()
        result = {
            **ack,
            **{
                k: wire[k]
                for k in (
                    "price",
                    "origQty",
                    "executedQty",
                    "origQuoteOrderQty",
                    "cummulativeQuoteQty",
                    "status",
                    "timeInForce",
                    "type",
                    "side",
                )
            },
            "workingTime": self.time,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if resp_type == "FULL":
            result["fills"] = [
                {
                    "price": fmt(f.price),
                    "qty": fmt(f.qty),
                    "commission": fmt(f.commission),
                    "commissionAsset": f.commission_asset,
                    "tradeId": f.trade_id,
                }
                for f in self.fills
            ]
        return result

    def to_cancel_response(self, cancel_client_id: str | None, now: int) -> dict[str, Any]:
        """Return the order as DELETE /api/v3/order answers it once cancelled."""
        wire = self.to_wire()
        return {
            "symbol": wire["symbol"],
            "origClientOrderId": self.client_order_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": cancel_client_id or f"cancel-{self.order_id}",
            "transactTime": now,
            "price": wire["price"],
            "origQty": wire["origQty"],
            "executedQty": wire["executedQty"],
            "origQuoteOrderQty": wire["origQuoteOrderQty"],
            "cummulativeQuoteQty": wire["cummulativeQuoteQty"],
            "status": wire["status"],
            "timeInForce": wire["timeInForce"],
            "type": wire["type"],
            "side": wire["side"],
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


@dataclass
class SimFill:
    """One execution of an order (a row of GET /api/v3/myTrades)."""

    trade_id: int
    order_id: int
    market_id: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def to_wire(self) -> dict[str, Any]:
        """Return the fill as GET /api/v3/myTrades answers it."""
        return {
            "symbol": self.market_id,
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "quoteQty": fmt(self.price * self.qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time,
            "isBuyer": self.is_buyer,
            "isMaker": self.is_maker,
            "isBestMatch": True,
        }


def select_orders(orders: Iterable[SimOrder], **filters: Any) -> list[SimOrder]:
    """Return ``orders`` sorted by id, keeping those matching ``market_id`` / ``is_open``."""
    out = []
    for order in sorted(orders, key=lambda o: o.order_id):
        if (
            "market_id" in filters
            and filters["market_id"]
            and order.market_id != filters["market_id"]
        ):
            continue
        if filters.get("open_only") and not order.is_open:
            continue
        out.append(order)
    return out
