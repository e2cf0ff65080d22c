"""The relational schema: SQLAlchemy 2 typed ORM, identical on SQLite and PostgreSQL.

The database is the source of truth for everything of value (users, bots, orders, fills,
positions, risk state, runs); Ray's in-memory state may be lost at any time.

Conventions: money and quantities are :class:`Money` (exact decimals), timestamps are
:class:`UTCDateTime`, enums are stored as their string values (no native enum types, so adding a
value never needs a migration on PostgreSQL).  Foreign keys say what happens on delete: rows that
only describe their parent cascade; financial records (orders, fills) restrict, so a bot with
history cannot be deleted by accident (the API archives it instead).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from cryptoorchestrator.platform.storage.types import BigId, Money, UTCDateTime, utcnow

# Deterministic constraint names, so Alembic migrations are the same on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), Decimal: Money(), dict[str, Any]: JSON()}


class TimestampMixin:
    """``created_at`` / ``updated_at`` maintained by the ORM."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------------------------- users


class User(TimestampMixin, Base):
    """A person who owns bots, exchange accounts and runs."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # "admin" (operator: global kill switch, portfolio limits, users), "trader" (own bots,
    # accounts, runs, own limits and kill switch) or "viewer" (reads own data only).
    role: Mapped[str] = mapped_column(String(16), default="trader", server_default="trader")
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # TOTP secret, encrypted with the platform key (pending until MFA is confirmed).
    mfa_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The last TOTP time step accepted: a code is good once, never replayed within its window.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    last_login_at: Mapped[datetime | None] = mapped_column()
    # Bumped to revoke every access token issued before (MFA switched on, logout everywhere,
    # role change, deactivation); access tokens carry the epoch they were issued in.
    auth_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class BackupCode(Base):
    """A single-use MFA backup code, stored hashed."""

    __tablename__ = "backup_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RefreshToken(Base):
    """A refresh token (hashed). Tokens rotate; reusing a rotated one revokes its family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    replaced_by: Mapped[str | None] = mapped_column(String(36))


class LoginThrottle(Base):
    """Failed credential checks of one key (account, client IP, or the pair), for lockouts.

    Keys are keyed hashes of ``kind:value`` (emails and addresses are not stored in clear);
    unknown emails get rows too, so they lock like real accounts.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Attempts reserved in the current round (a success resets them).
    failures: Mapped[int] = mapped_column(Integer, default=0)
    # Locks so far: the next lock of an escalating key lasts 2**strikes times the base.
    strikes: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# ------------------------------------------------------------------------- exchange accounts


class ExchangeAccount(TimestampMixin, Base):
    """Credentials for one exchange account; key and secret are encrypted at rest."""

    __tablename__ = "exchange_accounts"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    exchange: Mapped[str] = mapped_column(String(50))
    mode: Mapped[str] = mapped_column(String(10), default="paper")
    api_url: Mapped[str | None] = mapped_column(String(500))
    api_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    passphrase_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    permissions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_tested_at: Mapped[datetime | None] = mapped_column()


class PaperBalance(Base):
    """Virtual balance of a paper-trading account, per asset."""

    __tablename__ = "paper_balances"
    __table_args__ = (UniqueConstraint("account_id", "asset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_accounts.id", ondelete="CASCADE"), index=True
    )
    asset: Mapped[str] = mapped_column(String(20))
    free: Mapped[Decimal] = mapped_column(default=Decimal(0))
    locked: Mapped[Decimal] = mapped_column(default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# ------------------------------------------------------------------------------------- bots


class Bot(TimestampMixin, Base):
    """A trading bot: its configuration, the state the user wants, and the state it is in."""

    __tablename__ = "bots"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    trading_pair: Mapped[str] = mapped_column(String(40))
    strategy: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timeframe: Mapped[str] = mapped_column(String(8))
    exchange_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_accounts.id", ondelete="SET NULL"), index=True
    )
    mode: Mapped[str] = mapped_column(String(10), default="paper")
    risk_per_trade: Mapped[Decimal] = mapped_column()
    max_position_size: Mapped[Decimal] = mapped_column()
    stop_loss: Mapped[Decimal | None] = mapped_column()
    take_profit: Mapped[Decimal | None] = mapped_column()
    trailing_stop: Mapped[Decimal | None] = mapped_column()
    starting_balance: Mapped[Decimal | None] = mapped_column()
    desired_state: Mapped[str] = mapped_column(String(10), default="stopped")
    # Bots with the same group share one actor process (memory); None: a process of its own.
    actor_group: Mapped[str | None] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(10), default="Stopped")
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None] = mapped_column()
    archived_at: Mapped[datetime | None] = mapped_column()

    status_events: Mapped[list[BotStatusEvent]] = relationship(
        back_populates="bot", cascade="all, delete-orphan", passive_deletes=True
    )


class BotStatusEvent(Base):
    """One persisted status transition of a bot, with its time and reason."""

    __tablename__ = "bot_status_events"
    __table_args__ = (Index("ix_bot_status_events_bot_at", "bot_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    bot: Mapped[Bot] = relationship(back_populates="status_events")


class Order(TimestampMixin, Base):
    """An order, persisted as an intent before it is sent; the client order id is idempotent."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_status", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bot_id: Mapped[int | None] = mapped_column(ForeignKey("bots.id", ondelete="RESTRICT"))
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(50))
    symbol: Mapped[str] = mapped_column(String(40))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(10))
    price: Mapped[Decimal | None] = mapped_column()
    amount: Mapped[Decimal] = mapped_column()
    filled: Mapped[Decimal] = mapped_column(default=Decimal(0))
    average_price: Mapped[Decimal | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()


Index("ix_orders_created_desc", Order.created_at.desc(), Order.id.desc())
Index("ix_orders_bot_created_desc", Order.bot_id, Order.created_at.desc(), Order.id.desc())


class Trade(Base):
    """A fill: part or all of an order executed at one price."""

    __tablename__ = "trades"
    __table_args__ = (UniqueConstraint("order_id", "exchange_trade_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bot_id: Mapped[int | None] = mapped_column(ForeignKey("bots.id", ondelete="RESTRICT"))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    exchange_trade_id: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(40))
    side: Mapped[str] = mapped_column(String(4))
    price: Mapped[Decimal] = mapped_column()
    amount: Mapped[Decimal] = mapped_column()
    fee: Mapped[Decimal] = mapped_column(default=Decimal(0))
    fee_currency: Mapped[str | None] = mapped_column(String(20))
    realized_pnl: Mapped[Decimal | None] = mapped_column()
    timestamp: Mapped[datetime] = mapped_column()


# The API's hot queries read the newest trades first, overall and per bot (keyset pagination on
# (timestamp, id)); descending indexes serve them without a sort.
Index("ix_trades_timestamp_desc", Trade.timestamp.desc(), Trade.id.desc())
Index("ix_trades_bot_timestamp_desc", Trade.bot_id, Trade.timestamp.desc(), Trade.id.desc())


class Position(Base):
    """A bot's current position in one symbol (signed amount: negative is short)."""

    __tablename__ = "positions"
    __table_args__ = (UniqueConstraint("bot_id", "symbol"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    symbol: Mapped[str] = mapped_column(String(40))
    amount: Mapped[Decimal] = mapped_column(default=Decimal(0))
    average_price: Mapped[Decimal] = mapped_column(default=Decimal(0))
    realized_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0))
    fees_paid: Mapped[Decimal] = mapped_column(default=Decimal(0))
    stop_price: Mapped[Decimal | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EquitySnapshot(Base):
    """A bot's equity at one moment (cash plus marked-to-market positions)."""

    __tablename__ = "equity_snapshots"
    __table_args__ = (Index("ix_equity_snapshots_bot_ts", "bot_id", "timestamp"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    timestamp: Mapped[datetime] = mapped_column()
    equity: Mapped[Decimal] = mapped_column()
    cash: Mapped[Decimal] = mapped_column()
    position_value: Mapped[Decimal] = mapped_column()


# ------------------------------------------------------------------------------------- runs


class BacktestRun(Base):
    """One backtest, submitted from the CLI, the SDK or the API."""

    __tablename__ = "backtest_runs"
    __table_args__ = (Index("ix_backtest_runs_user_created", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    strategy: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    exchange: Mapped[str | None] = mapped_column(String(50))
    symbol: Mapped[str | None] = mapped_column(String(40))
    timeframe: Mapped[str | None] = mapped_column(String(8))
    start: Mapped[datetime | None] = mapped_column()
    end: Mapped[datetime | None] = mapped_column()
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    output_dir: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class OptimizationRun(Base):
    """A parameter study; ``study_key`` identifies it so a re-run resumes it."""

    __tablename__ = "optimization_runs"
    __table_args__ = (Index("ix_optimization_runs_user_created", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    study_key: Mapped[str] = mapped_column(String(64), index=True)
    strategy: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(10))
    objective: Mapped[str] = mapped_column(String(100))
    space: Mapped[dict[str, Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    n_trials: Mapped[int] = mapped_column(Integer, default=0)
    best_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best_value: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class OptimizationTrial(Base):
    """One trial of a study: its parameters, metrics, objective value or error."""

    __tablename__ = "optimization_trials"
    __table_args__ = (UniqueConstraint("run_id", "trial_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("optimization_runs.id", ondelete="CASCADE"))
    trial_key: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Objective values are statistics (Sharpe, return), not money: a float is the right type.
    value: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(12))
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)


# ------------------------------------------------------------------------------ risk, audit


class RiskLimit(Base):
    """One risk limit (``scope`` is ``portfolio`` or ``bot:<id>``), editable at run time."""

    __tablename__ = "risk_limits"
    __table_args__ = (UniqueConstraint("scope", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(60))
    value: Mapped[Decimal] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class RiskEvent(Base):
    """A denial, a breach or a kill switch: what happened, to which bot, under which limit."""

    __tablename__ = "risk_events"
    __table_args__ = (Index("ix_risk_events_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bot_id: Mapped[int | None] = mapped_column(ForeignKey("bots.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))
    limit_name: Mapped[str | None] = mapped_column(String(60))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditLog(Base):
    """Who did what: logins, bot changes, limit edits, kill switches, credential changes."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(60))
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -------------------------------------------------------------------------------- integrity


class IntegrityFinding(Base):
    """A row that broke an integrity rule (``cryptoorch db check``): quarantined, never fixed.

    The row itself is left as it is; this records what was found and why.  ``resolved_at`` is
    set when a later check no longer finds it, or when ``--repair`` rebuilt it from fills.
    """

    __tablename__ = "integrity_findings"
    __table_args__ = (Index("ix_integrity_findings_open", "resolved_at", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    table_name: Mapped[str] = mapped_column(String(60))
    row_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolution: Mapped[str | None] = mapped_column(Text)


# ---------------------------------------------------------------------------- notifications


class NotificationChannel(TimestampMixin, Base):
    """Where one user's notifications go: a webhook, Telegram chat, Discord/Slack or email.

    The destination and its secrets (URL, signing secret, bot token) are one JSON document
    encrypted at rest (``config_enc``); ``target_hint`` is the masked form shown by the API.
    ``lease_owner``/``lease_until``: the dispatcher sending to it now (one at a time, in order).
    Subscription: ``events``, ``bot_ids`` (None: all), ``min_severity``, and quiet hours
    ``quiet_start``-``quiet_end`` (``HH:MM``, local to ``timezone``); ``daily_summary_at``
    (``HH:MM`` local, None: no daily summary).
    """

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    config_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    target_hint: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str] | None] = mapped_column(JSON)
    min_severity: Mapped[str] = mapped_column(String(10), default="info")
    bot_ids: Mapped[list[int] | None] = mapped_column(JSON)
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    daily_summary_at: Mapped[str | None] = mapped_column(String(5))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column()
    last_sent_at: Mapped[datetime | None] = mapped_column()


class Notification(Base):
    """One event for one channel: the outbox row, written with the fact it reports.

    ``(channel_id, event_key)`` is unique, so a fact enqueued twice is sent once.  ``batch_key``
    is the idempotency key of the message that carries it (several coalesced rows share one);
    it is kept across retries and crashes so receivers can dedupe.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("channel_id", "event_key"),
        Index("ix_notifications_due", "status", "next_attempt_at"),
        Index("ix_notifications_channel_status", "channel_id", "status", "id"),
        Index("ix_notifications_user_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_key: Mapped[str] = mapped_column(String(120))
    event_type: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending -> sending -> sent, or back to pending (retry), or dead after the last attempt.
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    batch_key: Mapped[str | None] = mapped_column(String(64))
    claim_token: Mapped[str | None] = mapped_column(String(64), index=True)
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
