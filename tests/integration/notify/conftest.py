"""Fixtures of the notification tests: a migrated database (SQLite, then PostgreSQL), users,
bots, channels, fills, and a clock the tests move forward instead of waiting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from tests.integration.api.conftest import app_factory  # noqa: F401  (the API tests' fixture)

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.notify.channels import ChannelService
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.outbox import install_outbox
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import dispose_engines, session_factory, upgrade
from cryptoorchestrator.platform.storage.models import Bot, Order, Trade, User

SECRET_KEY = "notify-tests-secret-key-0123456789"


class FakeClock:
    """UTC time that moves only when told."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=1)  # rows written now are due

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += timedelta(seconds=seconds)


def bot_row(user_id: int, name: str = "alpha") -> Bot:
    """Return a new (unsaved) BTC/USDT sma_cross bot row of ``user_id``."""
    return Bot(
        user_id=user_id,
        name=name,
        trading_pair="BTC/USDT",
        strategy="sma_cross",
        params={},
        timeframe="1h",
        risk_per_trade=Decimal("1"),
        max_position_size=Decimal("10"),
    )


@dataclass
class NotifyDb:
    """A migrated database and what the tests need around it."""

    settings: Settings
    factory: sessionmaker[Session]
    box: SecretBox

    def user(self, email: str, role: str = "trader") -> int:
        """Insert a user; return its id."""
        with self.factory() as session:
            user = User(email=email, password_hash="x", role=role)
            session.add(user)
            session.commit()
            return int(user.id)

    def bot(self, user_id: int, name: str = "alpha") -> int:
        """Insert a paper bot of ``user_id``; return its id."""
        with self.factory() as session:
            bot = bot_row(user_id, name)
            session.add(bot)
            session.commit()
            return int(bot.id)

    def channel(
        self, user_id: int, notify: NotifySettings, name: str = "hook", **values: Any
    ) -> tuple[int, str | None]:
        """Create a channel of ``user_id``; return its id and its webhook secret."""
        events = values.pop("events", None)
        min_severity = values.pop("min_severity", "info")
        subscription = {
            key: values.pop(key)
            for key in ("bot_ids", "quiet_start", "quiet_end", "timezone", "daily_summary_at")
            if key in values
        }
        with self.factory() as session:
            row, config = ChannelService(session, self.box, notify, user_id).create(
                name, values, events=events, min_severity=min_severity, **subscription
            )
            session.commit()
            return int(row.id), config.secret

    def fills(
        self, bot_id: int, n: int, *, commit: bool = True, at: datetime | None = None
    ) -> list[int]:
        """Record ``n`` fills of one order of ``bot_id`` in one transaction; return trade ids.

        The fills happened ``at`` (default 2026-01-05 12:00 UTC).
        """
        with self.factory() as session:
            order = Order(
                bot_id=bot_id,
                client_order_id=f"co-{bot_id}-{datetime.now(UTC).timestamp()}-{n}",
                exchange="paper",
                symbol="BTC/USDT",
                side="buy",
                type="market",
                amount=Decimal(n),
                status="filled",
            )
            session.add(order)
            session.flush()
            trades = [
                Trade(
                    bot_id=bot_id,
                    order_id=order.id,
                    exchange_trade_id=f"t{i}",
                    symbol="BTC/USDT",
                    side="buy",
                    price=Decimal("42000.5") + i,
                    amount=Decimal("0.001"),
                    fee=Decimal("0.01"),
                    timestamp=at or datetime(2026, 1, 5, 12, 0, tzinfo=UTC),
                )
                for i in range(n)
            ]
            session.add_all(trades)
            session.flush()
            ids = [int(t.id) for t in trades]
            if commit:
                session.commit()
            else:
                session.rollback()
            return ids


@pytest.fixture
def notify_db(settings: Settings, db_url: str) -> Iterator[NotifyDb]:
    """A database at the newest migration, SQLite then PostgreSQL, with the outbox installed."""
    s = settings.model_copy(update={"database_url": db_url})
    upgrade(s)
    install_outbox()
    yield NotifyDb(s, session_factory(s), SecretBox(SECRET_KEY))
    dispose_engines()


@pytest.fixture
def clock() -> FakeClock:
    """A clock at a fixed moment."""
    return FakeClock()
