"""Risk limits and the values a risk check returns (approvals, denials, breaches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cryptoorchestrator.platform.model import OrderSide


class RiskLimits(BaseModel):
    """Limits enforced across all bots; percentages are of equity (bot's or portfolio's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_position_pct: Decimal = Field(
        Decimal(100), ge=1, le=100, description="cap on any bot's position, % of its equity"
    )
    max_risk_per_trade_pct: Decimal = Field(
        Decimal(5), ge=Decimal("0.1"), le=5, description="cap on loss if a stop is hit, % equity"
    )
    max_total_exposure_pct: Decimal = Field(
        Decimal(100), gt=0, le=1000, description="sum of all positions, % of portfolio equity"
    )
    max_open_orders: int = Field(5, ge=1, le=1000, description="per bot")
    max_open_orders_total: int = Field(50, ge=1, le=100_000)
    max_orders_per_minute: int = Field(30, ge=1, le=10_000, description="per bot")
    max_daily_loss_pct: Decimal = Field(Decimal(5), gt=0, le=100, description="per bot")
    max_drawdown_pct: Decimal = Field(Decimal(20), gt=0, le=100, description="per bot")
    portfolio_max_daily_loss_pct: Decimal = Field(Decimal(5), gt=0, le=100)
    portfolio_max_drawdown_pct: Decimal = Field(Decimal(20), gt=0, le=100)
    kill_switch: bool = False

    def to_public(self) -> dict[str, Any]:
        """Return the limits as JSON-friendly values (decimals as strings)."""
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.model_dump().items()}


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """What the risk manager needs to know about an order before it is sent."""

    bot_id: int
    client_order_id: str
    symbol: str
    side: OrderSide
    amount: Decimal
    price: Decimal
    reduce_only: bool = False
    stop_price: Decimal | None = None
    #: The bot's equity and position (at the order's price) when it asks, so limits are
    #: checked against now rather than the last candle, without a second round trip.
    equity: Decimal | None = None
    position_notional: Decimal | None = None

    @property
    def notional(self) -> Decimal:
        """Amount times price, in the quote currency."""
        return self.amount * self.price


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """An approval, or a denial naming the limit and why."""

    approved: bool
    reason: str = "approved"
    limit: str | None = None

    @classmethod
    def approve(cls) -> RiskDecision:
        """Return an approval."""
        return cls(True)

    @classmethod
    def deny(cls, limit: str, reason: str) -> RiskDecision:
        """Return a denial under ``limit``."""
        return cls(False, reason, limit)


@dataclass(frozen=True, slots=True)
class Breach:
    """A limit breached by a bot (``bot_id``) or by the whole portfolio (``bot_id`` None)."""

    limit: str
    message: str
    bot_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
