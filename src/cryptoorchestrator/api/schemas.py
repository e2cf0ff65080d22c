"""Request and response bodies: camelCase on the wire, exact decimals as strings.

Families follow the template: ``XCreate`` (body of a POST), ``XUpdate`` (PATCH, all optional),
``XPublic`` (what is returned; never a secret).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.services.bots import RANGES
from cryptoorchestrator.platform.validation import (
    MONEY_DIGITS,
    MONEY_LIMIT,
    MONEY_PLACES,
    MONEY_RULE,
    TEXT_RULE,
    check_json,
    text_problem,
)

T = TypeVar("T")


# ----------------------------------------------------------------------------- field types
def refuse_bad_text(value: str | None) -> str | None:
    """Refuse text no database or encoder can store: NUL characters, unpaired surrogates."""
    if value is not None:
        problem = text_problem(value)
        if problem is not None:
            raise PydanticCustomError("text_invalid", problem, {"allowed": TEXT_RULE})
    return value


def refuse_bad_secret(value: Any) -> Any:
    """:func:`refuse_bad_text` on the raw input of a secret, before it is wrapped and hidden."""
    return refuse_bad_text(value) if isinstance(value, str) else value


def bound_json_object(value: Any) -> Any:
    """Bound a free-form JSON document; the error's ``subpath`` names the offending value.

    Big integers, non-finite numbers, long or unstorable text and deep nesting are refused
    here, before a strategy, numpy or a JSON column sees them.
    """
    try:
        return check_json("", value)
    except InvalidInputError as exc:
        raise PydanticCustomError(
            "json_invalid",
            exc.reason,
            {"subpath": exc.field.removeprefix("."), "allowed": exc.allowed or ""},
        ) from None


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def keep(**constraints: Any) -> Any:
    """A PATCH field that may be left out but not set to null (``None`` only marks it unset).

    Its type is not optional, so an explicit ``null`` fails validation naming the field,
    instead of reaching a NOT NULL column or being stored as the text ``"None"``.
    """
    return Field(None, json_schema_extra=_no_default, **constraints)


#: Text a database can store: no NUL characters, no unpaired surrogates (combine with Field).
Text = Annotated[str, AfterValidator(refuse_bad_text)]
#: A write-only credential of up to 512 characters, checked like :data:`Text` before it is hidden.
Secret = Annotated[SecretStr, Field(max_length=512), BeforeValidator(refuse_bad_secret)]
#: A free-form JSON object (strategy parameters, search spaces) of bounded size and numbers.
JsonObject = Annotated[dict[str, Any], AfterValidator(bound_json_object)]


def _money(lo: Decimal, hi: Decimal, description: str) -> Any:
    return Field(
        ge=lo,
        le=hi,
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        allow_inf_nan=False,
        description=f"{description}, {lo}-{hi}",
    )


RiskPerTrade = Annotated[Decimal, _money(*RANGES["risk_per_trade"], "% of equity")]
MaxPositionSize = Annotated[Decimal, _money(*RANGES["max_position_size"], "% of the bot's equity")]
StopLoss = Annotated[Decimal, _money(*RANGES["stop_loss"], "% below the entry")]
TakeProfit = Annotated[Decimal, _money(*RANGES["take_profit"], "% beyond the entry")]
TrailingStop = Annotated[Decimal, _money(*RANGES["trailing_stop"], "% behind the best price")]
#: An amount of money: positive and within the ``NUMERIC(38, 18)`` money columns.
Balance = Annotated[
    Decimal,
    Field(
        gt=0,
        lt=MONEY_LIMIT,
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        allow_inf_nan=False,
        description=f"in the quote currency, positive, {MONEY_RULE}",
    ),
]
ActorGroup = Annotated[Text, Field(pattern=r"^[a-z0-9_-]{1,40}$")]
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

    email: Text = Field(max_length=320)
    password: Text = Field(min_length=8, max_length=128)


class LoginIn(StrictBody):
    """Credentials; ``totpCode`` or ``backupCode`` when MFA is on."""

    email: Text = Field(max_length=320)
    password: Text = Field(max_length=128)
    totp_code: Text | None = Field(None, max_length=12)
    backup_code: Text | None = Field(None, max_length=32)


class RefreshIn(StrictBody):
    """A refresh token to rotate."""

    refresh_token: Text = Field(min_length=1, max_length=512)


class LogoutIn(StrictBody):
    """The refresh token whose session ends (all sessions when omitted)."""

    refresh_token: Text | None = Field(None, max_length=512)


class TokenPublic(CamelModel):
    """An access token (short-lived) and a refresh token (single use)."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105
    expires_in: int


class OAuth2TokenPublic(BaseModel):
    """The OAuth2 token answer (RFC 6749 section 5.1): snake_case, as Swagger UI reads it."""

    access_token: str
    refresh_token: str = Field(description="single use, for POST /api/auth/refresh")
    token_type: str = "bearer"  # noqa: S105
    expires_in: int = Field(description="seconds until the access token expires")


class UserPublic(CamelModel):
    """A user's profile."""

    id: int
    email: str
    role: str = Field(description="admin, trader or viewer")
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

    code: Text = Field(min_length=4, max_length=32)


class PasswordChangeIn(StrictBody):
    """The current password, the new one, and a TOTP or backup code when MFA is on."""

    current_password: Text = Field(max_length=128)
    new_password: Text = Field(min_length=8, max_length=128)
    code: Text | None = Field(None, min_length=4, max_length=32)


class BackupCodesPublic(CamelModel):
    """Ten single-use backup codes, shown once."""

    backup_codes: list[str]


# -------------------------------------------------------------------------------------- bots
class BotCreate(StrictBody):
    """A new bot.  Required: name, tradingPair, strategy."""

    name: Text = Field(min_length=1, max_length=100)
    trading_pair: Text = Field(min_length=3, max_length=40, examples=["BTC/USDT"])
    strategy: Text = Field(min_length=1, max_length=100, examples=["sma_cross"])
    params: JsonObject = Field(default_factory=dict)
    timeframe: Text = Field("1h", max_length=8)
    exchange_account_id: DbId | None = None
    mode: Mode = "paper"
    risk_per_trade: RiskPerTrade = Decimal(1)
    max_position_size: MaxPositionSize = Decimal(10)
    stop_loss: StopLoss | None = None
    take_profit: TakeProfit | None = None
    trailing_stop: TrailingStop | None = None
    starting_balance: Balance | None = None
    actor_group: ActorGroup | None = Field(
        None, description="bots of one group share one Ray actor process (saves memory)"
    )


class BotUpdate(StrictBody):
    """Fields to change; trading fields only while the bot is stopped.

    ``null`` clears the optional fields (account, stops, balance, group); the others may be
    left out but not set to null.
    """

    name: Text = keep(min_length=1, max_length=100)
    trading_pair: Text = keep(min_length=3, max_length=40)
    strategy: Text = keep(min_length=1, max_length=100)
    params: JsonObject = keep()
    timeframe: Text = keep(max_length=8)
    exchange_account_id: DbId | None = None
    mode: Mode = keep()
    risk_per_trade: RiskPerTrade = keep()
    max_position_size: MaxPositionSize = keep()
    stop_loss: StopLoss | None = None
    take_profit: TakeProfit | None = None
    trailing_stop: TrailingStop | None = None
    starting_balance: Balance | None = None
    actor_group: ActorGroup | None = Field(
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

    name: Text = Field(min_length=1, max_length=100)
    exchange: Text = Field(min_length=1, max_length=40, examples=["binance"])
    mode: Mode = "paper"
    api_url: Text | None = Field(None, max_length=500)
    api_key: Secret | None = None
    api_secret: Secret | None = None
    passphrase: Secret | None = None


class ExchangeAccountUpdate(StrictBody):
    """Fields to change; an empty credential string removes it."""

    name: Text = keep(min_length=1, max_length=100)
    mode: Mode = keep()
    api_url: Text | None = Field(None, max_length=500)
    api_key: Secret | None = None
    api_secret: Secret | None = None
    passphrase: Secret | None = None


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

    strategy: Text = Field(min_length=1, max_length=100)
    params: JsonObject = Field(default_factory=dict)
    exchange: Text = Field("binance", max_length=50)
    symbol: Text = Field("BTC/USDT", max_length=40)
    timeframe: Text = Field("1h", max_length=8)
    start: datetime | None = None
    end: datetime | None = None
    fee_bps: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] = DEFAULT_FEE_BPS


class OptimizationCreate(StrictBody):
    """A parameter study to run on the cluster."""

    strategy: Text = Field(min_length=1, max_length=100)
    space: JsonObject
    method: Literal["grid", "random", "tpe"] = "grid"
    objective: Text = Field("sharpe", max_length=100)
    n_trials: Annotated[int, Field(ge=1, le=100_000)] | None = None
    exchange: Text = Field("binance", max_length=50)
    symbol: Text = Field("BTC/USDT", max_length=40)
    timeframe: Text = Field("1h", max_length=8)
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

    limits: list[JsonObject] = Field(min_length=1, max_length=100)


class KillSwitchIn(StrictBody):
    """Emergency stop: your own bots (``user``, the default) or every bot (``global``, admins)."""

    flatten: bool = False
    scope: Literal["user", "global"] = "user"


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
