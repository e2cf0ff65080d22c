"""The demo replays the bundled slice and resumes its clock where its bot stopped."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from cryptoorchestrator.platform.data.store import OhlcvStore, bundled_candles
from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.services.demo import (
    DEMO_BOT,
    DEMO_EMAIL,
    archive_demo_bot,
    demo_candles,
    plan_demo,
)
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope, upgrade
from cryptoorchestrator.platform.storage.models import Bot, EquitySnapshot, User


@pytest.fixture
def db(settings: Settings) -> Settings:
    """A migrated SQLite database with the demo user and bot."""
    upgrade(settings)
    with session_scope(settings) as session:
        user = User(email=DEMO_EMAIL, password_hash="!x", role="admin")  # noqa: S106
        session.add(user)
        session.flush()
        session.add(
            Bot(
                user_id=user.id,
                name=DEMO_BOT,
                trading_pair="BTC/USDT",
                strategy="sma_cross",
                timeframe="1h",
                risk_per_trade=Decimal(1),
                max_position_size=Decimal(50),
            )
        )
    return settings


def _snapshot(settings: Settings, at_ms: int) -> None:
    with session_scope(settings) as session:
        bot_id = session.query(Bot.id).filter(Bot.name == DEMO_BOT).scalar()
        session.add(
            EquitySnapshot(
                bot_id=bot_id,
                timestamp=datetime.fromtimestamp(at_ms / 1000, UTC),
                equity=Decimal(1),
                cash=Decimal(1),
                position_value=Decimal(0),
            )
        )


def test_candles_are_the_bundled_slice_whatever_the_store_holds(settings: Settings) -> None:
    store = OhlcvStore(settings.data_dir)
    older = pa.table(
        {
            "timestamp": pa.array(
                [
                    1_500_000_000_000 - 1_500_000_000_000 % 3_600_000 + 3_600_000 * i
                    for i in range(3)
                ]
            ),
            **{c: pa.array([1.0, 1.0, 1.0]) for c in ("open", "high", "low", "close", "volume")},
        }
    )
    store.write("binance", "BTC/USDT", "1h", older, mode="append")  # a 2017 import
    table = demo_candles()
    first = datetime.fromtimestamp(table.column("timestamp")[0].as_py() / 1000, UTC)
    assert first == datetime(2021, 1, 1, tzinfo=UTC)
    with pytest.raises(NotFoundError, match="shipped: binance:BTC/USDT:1h"):
        bundled_candles("binance", "ETH/USDT", "1h")


def test_first_start_resume_and_start_over(db: Settings) -> None:
    table = demo_candles()
    ts = table.column("timestamp")
    with session_scope(db) as session:
        first = plan_demo(session, table)
    assert first.start_ms is None
    assert not first.resumed
    assert not first.start_over
    middle = int(ts[5000].as_py()) + 3_600_000  # the close of candle 5000
    _snapshot(db, middle)
    with session_scope(db) as session:
        resumed = plan_demo(session, table)
    assert resumed.start_ms == middle
    assert resumed.resumed
    _snapshot(db, int(ts[-1].as_py()) + 3_600_000)  # the slice is used up
    with session_scope(db) as session:
        over = plan_demo(session, table)
        assert over.start_over
        assert over.start_ms is None
        archived = archive_demo_bot(session)
    assert archived is not None
    with session_scope(db) as session:
        bot = session.get(Bot, archived)
        assert bot is not None
        assert bot.archived_at is not None
        assert bot.name == f"{DEMO_BOT}~archived-{archived}"
        assert plan_demo(session, table).start_ms is None  # the next bot starts afresh
