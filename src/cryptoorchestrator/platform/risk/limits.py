"""Risk limits and the values a risk check returns (approvals, denials, breaches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

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
    max_gross_leverage: Decimal = Field(
        Decimal(1),
        gt=0,
        le=125,
        description="per bot: sum of |positions| as a multiple of its equity (risk.margin)",
    )
    maintenance_margin_pct: Decimal = Field(
        Decimal("0.5"),
        ge=0,
        lt=100,
        description="per bot: a bot whose equity falls to this % of its gross exposure is halted",
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


class UserRiskLimits(BaseModel):
    """One user's own limits on their own bots; ``None`` leaves the portfolio limit in force.

    They can only tighten: each applies together with the portfolio limit of the same name,
    and the stricter one wins.  Per-bot fields apply to each of the user's bots;
    ``max_total_exposure_pct`` and ``max_open_orders_total`` to the user's bots together
    (exposure as % of the user's equity).  ``kill_switch`` stops only this user's trading.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_position_pct: Decimal | None = Field(None, ge=1, le=100)
    max_risk_per_trade_pct: Decimal | None = Field(None, ge=Decimal("0.1"), le=5)
    max_total_exposure_pct: Decimal | None = Field(None, gt=0, le=1000)
    max_open_orders: int | None = Field(None, ge=1, le=1000)
    max_open_orders_total: int | None = Field(None, ge=1, le=100_000)
    max_orders_per_minute: int | None = Field(None, ge=1, le=10_000)
    max_daily_loss_pct: Decimal | None = Field(None, gt=0, le=100)
    max_drawdown_pct: Decimal | None = Field(None, gt=0, le=100)
    kill_switch: bool = False

    #: Fields that tighten the portfolio limit of the same name for each of the user's bots.
    PER_BOT: ClassVar[tuple[str, ...]] = (
        "max_position_pct",
        "max_risk_per_trade_pct",
        "max_open_orders",
        "max_orders_per_minute",
        "max_daily_loss_pct",
        "max_drawdown_pct",
    )

    def applied_to(self, portfolio: RiskLimits) -> RiskLimits:
        """Return ``portfolio`` with each per-bot limit tightened to this user's, if stricter."""
        update = {
            name: min(getattr(portfolio, name), mine)
            for name in self.PER_BOT
            if (mine := getattr(self, name)) is not None
        }
        return portfolio.model_copy(update=update) if update else portfolio

    def to_public(self) -> dict[str, Any]:
        """Return the limits as JSON-friendly values (decimals as strings, unset as null)."""
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.model_dump().items()}


def user_scope(user_id: int) -> str:
    """Return the ``risk_limits.scope`` of a user's own limits."""
    return f"user:{user_id}"


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
    #: The order's fee rate, when the bot knows it: the gross-exposure cap then holds on the
    #: equity after the fee, the kernel's rule exactly (``margin.entry_room`` with its fee).
    fee_rate: Decimal | None = None

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
