"""Request and response bodies: camelCase on the wire, exact decimals as strings.

Families follow the template: ``XCreate`` (body of a POST), ``XUpdate`` (PATCH, all optional),
``XPublic`` (what is returned; never a secret).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel

T = TypeVar("T")

RiskPerTrade = Annotated[
    Decimal, Field(ge=Decimal("0.1"), le=Decimal("5.0"), description="% of equity, 0.1-5.0")
]
MaxPositionSize = Annotated[
    Decimal, Field(ge=Decimal(1), le=Decimal(100), description="% of the bot's equity, 1-100")
]
Percent = Annotated[Decimal, Field(gt=Decimal(0), le=Decimal(1000), description="percent")]
Mode = Literal["paper", "live"]
#: Database ids are 32-bit on some tables; larger numbers can name nothing.
DbId = Annotated[int, Field(ge=1, le=2_147_483_647)]


class CamelModel(BaseModel):
    """Base of every body: camelCase aliases, snake_case accepted too."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        serialize_by_alias=True,
    )


class StrictBody(CamelModel):
    """Request bodies refuse unknown fields, so typos fail loudly."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """One offending field."""

    field: str
    message: str
    allowed: str | None = None


class ErrorBody(BaseModel):
    """The one error shape of the API."""

    code: str
    message: str
    details: list[ErrorDetail] = []


class Page(CamelModel, Generic[T]):
    """A page of a list, newest first; pass ``nextCursor`` back as ``cursor`` for the next."""

    items: list[T]
    next_cursor: str | None = None


# ------------------------------------------------------------------------------------- auth
class RegisterIn(StrictBody):
    """A new account."""

    email: str = Field(max_length=320)
    password: str = Field(min_length=8, max_length=128)


class LoginIn(StrictBody):
    """Credentials; ``totpCode`` or ``backupCode`` when MFA is on."""

    email: str = Field(max_length=320)
    password: str = Field(max_length=128)
    totp_code: str | None = Field(None, max_length=12)
    backup_code: str | None = Field(None, max_length=32)


class RefreshIn(StrictBody):
    """A refresh token to rotate."""

    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(StrictBody):
    """The refresh token whose session ends (all sessions when omitted)."""

    refresh_token: str | None = Field(None, max_length=512)


class TokenPublic(CamelModel):
    """An access token (short-lived) and a refresh token (single use)."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105
    expires_in: int


class UserPublic(CamelModel):
    """A user's profile."""

    id: int
    email: str
    mfa_enabled: bool
    created_at: datetime
    last_login_at: datetime | None = None
    backup_codes_left: int | None = None


class MfaEnrolPublic(CamelModel):
    """A pending TOTP secret; add it to an authenticator app, then confirm with a code."""

    secret: str
    otpauth_uri: str


class MfaCodeIn(StrictBody):
    """A TOTP code (or a backup code where the route says so)."""

    code: str = Field(min_length=4, max_length=32)


class BackupCodesPublic(CamelModel):
    """Ten single-use backup codes, shown once."""

    backup_codes: list[str]


# -------------------------------------------------------------------------------------- bots
class BotCreate(StrictBody):
    """A new bot.  Required: name, tradingPair, strategy."""

    name: str = Field(min_length=1, max_length=100)
    trading_pair: str = Field(min_length=3, max_length=40, examples=["BTC/USDT"])
    strategy: str = Field(min_length=1, max_length=100, examples=["sma_cross"])
    params: dict[str, Any] = Field(default_factory=dict)
    timeframe: str = Field("1h", max_length=8)
    exchange_account_id: DbId | None = None
    mode: Mode = "paper"
    risk_per_trade: RiskPerTrade = Decimal(1)
    max_position_size: MaxPositionSize = Decimal(10)
    stop_loss: Percent | None = None
    take_profit: Percent | None = None
    trailing_stop: Percent | None = None
    starting_balance: Annotated[Decimal, Field(gt=0)] | None = None
    actor_group: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")] | None = Field(
        None, description="bots of one group share one Ray actor process (saves memory)"
    )


class BotUpdate(StrictBody):
    """Fields to change; trading fields only while the bot is stopped."""

    name: str | None = Field(None, min_length=1, max_length=100)
    trading_pair: str | None = Field(None, min_length=3, max_length=40)
    strategy: str | None = Field(None, min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    timeframe: str | None = Field(None, max_length=8)
    exchange_account_id: DbId | None = None
    mode: Mode | None = None
    risk_per_trade: RiskPerTrade | None = None
    max_position_size: MaxPositionSize | None = None
    stop_loss: Percent | None = None
    take_profit: Percent | None = None
    trailing_stop: Percent | None = None
    starting_balance: Annotated[Decimal, Field(gt=0)] | None = None
    actor_group: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")] | None = Field(
        None, description="bots of one group share one Ray actor process (saves memory)"
    )


class BotPublic(CamelModel):
    """A bot as its owner sees it."""

    id: int
    name: str
    trading_pair: str
    strategy: str
    params: dict[str, Any]
    timeframe: str
    exchange_account_id: int | None
    mode: str
    risk_per_trade: Decimal
    max_position_size: Decimal
    stop_loss: Decimal | None
    take_profit: Decimal | None
    trailing_stop: Decimal | None
    starting_balance: Decimal | None
    actor_group: str | None = None
    desired_state: str
    status: str
    status_reason: str | None
    status_changed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class BotStatusEventPublic(CamelModel):
    """One status transition."""

    status: str
    reason: str | None
    at: datetime


class BotStatusPublic(CamelModel):
    """A bot's status, desired state and latest transitions."""

    bot_id: int
    status: str
    desired_state: str
    reason: str | None
    changed_at: datetime | None
    events: list[BotStatusEventPublic]


class BotLogsPublic(CamelModel):
    """The last lines of ``logs/bot_<id>.log`` (JSON lines)."""

    bot_id: int
    lines: list[str]


class DeletedPublic(CamelModel):
    """What a delete did (bots with history are archived, not deleted)."""

    id: int
    outcome: str


# ------------------------------------------------------------------------------- trading
class TradePublic(CamelModel):
    """A fill."""

    id: int
    bot_id: int | None
    order_id: int
    exchange_trade_id: str
    symbol: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str | None
    realized_pnl: Decimal | None
    timestamp: datetime


class OrderPublic(CamelModel):
    """An order and its fills so far."""

    id: int
    bot_id: int | None
    client_order_id: str
    exchange_order_id: str | None
    exchange: str
    symbol: str
    side: str
    type: str
    price: Decimal | None
    amount: Decimal
    filled: Decimal
    average_price: Decimal | None
    status: str
    status_reason: str | None
    submitted_at: datetime | None
    closed_at: datetime | None
    created_at: datetime


class PositionPublic(CamelModel):
    """A bot's position in one symbol (negative amount: short)."""

    id: int
    bot_id: int
    symbol: str
    amount: Decimal
    average_price: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    stop_price: Decimal | None
    updated_at: datetime


# ------------------------------------------------------------------------------- markets
class MarketPublic(CamelModel):
    """A stored dataset: symbol, timeframe, span (ms since epoch, UTC)."""

    exchange: str
    symbol: str
    timeframe: str
    rows: int
    first: int | None
    last: int | None
    gaps: int


class CandlePublic(BaseModel):
    """One candle; ``timestamp`` is its open time in ms since epoch, UTC."""

    timestamp: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class OhlcvPublic(CamelModel):
    """Candles of one dataset, oldest first."""

    exchange: str
    symbol: str
    timeframe: str
    candles: list[CandlePublic]


# -------------------------------------------------------------------------- integrations
class ExchangeAccountCreate(StrictBody):
    """An exchange account; credentials are write-only and stored encrypted."""

    name: str = Field(min_length=1, max_length=100)
    exchange: str = Field(min_length=1, max_length=40, examples=["binance"])
    mode: Mode = "paper"
    api_url: str | None = Field(None, max_length=500)
    api_key: SecretStr | None = Field(None, max_length=512)
    api_secret: SecretStr | None = Field(None, max_length=512)
    passphrase: SecretStr | None = Field(None, max_length=512)


class ExchangeAccountUpdate(StrictBody):
    """Fields to change; an empty credential string removes it."""

    name: str | None = Field(None, min_length=1, max_length=100)
    mode: Mode | None = None
    api_url: str | None = Field(None, max_length=500)
    api_key: SecretStr | None = Field(None, max_length=512)
    api_secret: SecretStr | None = Field(None, max_length=512)
    passphrase: SecretStr | None = Field(None, max_length=512)


class ExchangeAccountPublic(CamelModel):
    """An exchange account without its secrets (only whether each is set)."""

    id: int
    name: str
    exchange: str
    mode: str
    api_url: str | None
    has_api_key: bool
    has_api_secret: bool
    has_passphrase: bool
    permissions: dict[str, Any] | None
    last_tested_at: datetime | None
    created_at: datetime


# ---------------------------------------------------------------------------------- runs
class BacktestCreate(StrictBody):
    """A backtest to run on the cluster."""

    strategy: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    exchange: str = Field("binance", max_length=50)
    symbol: str = Field("BTC/USDT", max_length=40)
    timeframe: str = Field("1h", max_length=8)
    start: datetime | None = None
    end: datetime | None = None
    fee_bps: Annotated[float, Field(ge=0, le=1000)] = 10.0


class OptimizationCreate(StrictBody):
    """A parameter study to run on the cluster."""

    strategy: str = Field(min_length=1, max_length=100)
    space: dict[str, Any]
    method: Literal["grid", "random", "tpe"] = "grid"
    objective: str = Field("sharpe", max_length=100)
    n_trials: Annotated[int, Field(ge=1, le=100_000)] | None = None
    exchange: str = Field("binance", max_length=50)
    symbol: str = Field("BTC/USDT", max_length=40)
    timeframe: str = Field("1h", max_length=8)
    start: datetime | None = None
    end: datetime | None = None


class RunSubmitted(CamelModel):
    """The id of a submitted run."""

    id: str
    status: str


class BacktestRunPublic(CamelModel):
    """A backtest run's status, progress and (when finished) metrics."""

    id: str
    strategy: str
    params: dict[str, Any]
    exchange: str | None
    symbol: str | None
    timeframe: str | None
    status: str
    progress: float
    metrics: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class OptimizationRunPublic(CamelModel):
    """An optimization run's status, progress and best result so far."""

    id: str
    strategy: str
    method: str
    objective: str
    status: str
    progress: float
    n_trials: int
    best_params: dict[str, Any] | None
    best_value: float | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class RiskLimitPublic(CamelModel):
    """One persisted risk limit."""

    scope: str
    name: str
    value: Decimal
    updated_at: datetime


class RiskLimitsUpdate(StrictBody):
    """New values of named limits (scope ``portfolio`` or ``bot:<id>``)."""

    limits: list[dict[str, Any]] = Field(min_length=1, max_length=100)


class KillSwitchIn(StrictBody):
    """Emergency stop-all."""

    flatten: bool = False


# ------------------------------------------------------------------------------ analytics
class PerformancePublic(CamelModel):
    """P&L, return and risk figures; money as exact decimal strings, ratios as floats or null."""

    starting_balance: Decimal
    equity: Decimal | None = Field(description="latest equity snapshot; null without one")
    realized_pnl: Decimal
    unrealized_pnl: Decimal | None = Field(description="equity - startingBalance - realizedPnl")
    total_pnl: Decimal
    total_return: float | None = Field(description="totalPnl / startingBalance")
    sharpe: float | None = Field(description="annualised over 365 days, from equity snapshots")
    max_drawdown: float | None = Field(description="largest fall from a peak, a fraction")
    win_rate: float | None = Field(description="share of closing fills with positive P&L")
    trade_count: int
    closing_trade_count: int
    fees: Decimal = Field(description="in the quote currency")
    snapshot_count: int
    as_of: datetime | None = Field(description="time of the latest equity snapshot")


class BotPerformancePublic(PerformancePublic):
    """One bot's performance."""

    bot_id: int
    name: str
    trading_pair: str
    archived: bool


class PerformanceReportPublic(CamelModel):
    """The portfolio of your bots and each bot."""

    portfolio: PerformancePublic
    bots: list[BotPerformancePublic]
