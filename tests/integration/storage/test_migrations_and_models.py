"""The schema, migrations and exact-money types, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import (
    Bot,
    BotStatusEvent,
    Order,
    Position,
    Trade,
    User,
)
from cryptoorchestrator.platform.storage.runs import get_backtest_run, record_backtest_run

REQUIRED_TABLES = {
    "users",
    "refresh_tokens",
    "backup_codes",
    "exchange_accounts",
    "paper_balances",
    "bots",
    "bot_status_events",
    "orders",
    "trades",
    "positions",
    "equity_snapshots",
    "backtest_runs",
    "optimization_runs",
    "optimization_trials",
    "risk_limits",
    "risk_events",
    "audit_log",
}


@pytest.fixture
def migrated(db_url: str, tmp_path):  # noqa: ANN001, ANN201
    settings = Settings(database_url=db_url, var_dir=tmp_path / "var")
    rev = db.upgrade(settings)
    assert rev == db.head_revision()
    yield settings
    db.dispose_engines()


def _user(session, email: str = "a@example.com") -> User:  # noqa: ANN001
    user = User(email=email, password_hash="x")
    session.add(user)
    session.flush()
    return user


def _bot(session, user: User, name: str = "b1") -> Bot:  # noqa: ANN001
    bot = Bot(
        user_id=user.id,
        name=name,
        trading_pair="BTC/USDT",
        strategy="sma_cross",
        params={"fast": 10, "slow": 50},
        timeframe="1h",
        risk_per_trade=Decimal("1.5"),
        max_position_size=Decimal("25"),
    )
    session.add(bot)
    session.flush()
    return bot


def test_upgrade_creates_every_table_and_the_hot_indexes(migrated: Settings) -> None:
    engine = db.get_engine(migrated)
    insp = inspect(engine)
    assert REQUIRED_TABLES <= set(insp.get_table_names())
    trade_indexes = {ix["name"] for ix in insp.get_indexes("trades")}
    assert {"ix_trades_timestamp_desc", "ix_trades_bot_timestamp_desc"} <= trade_indexes
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("orders")}
    assert ("client_order_id",) in uniques


def test_upgrade_is_idempotent_and_downgrade_reverts(migrated: Settings) -> None:
    assert db.upgrade(migrated) == db.head_revision()
    db.dispose_engines()
    assert db.downgrade(migrated, "base") is None
    assert "trades" not in inspect(db.get_engine(migrated)).get_table_names()
    db.dispose_engines()
    assert db.upgrade(migrated) == db.head_revision()


def test_money_round_trips_exactly(migrated: Settings) -> None:
    amount = Decimal("0.123456789012345678")
    price = Decimal("98765432109876543210.5")
    with db.session_scope(migrated) as session:
        user = _user(session)
        bot = _bot(session, user)
        order = Order(
            bot_id=bot.id,
            client_order_id="co-1",
            exchange="binance",
            symbol="BTC/USDT",
            side="buy",
            type="market",
            amount=amount,
            price=price,
            status="intent",
        )
        session.add(order)
    with db.session_scope(migrated) as session:
        stored = session.scalars(select(Order)).one()
        assert stored.amount == amount
        assert stored.price == price
        assert stored.filled == 0
        assert stored.created_at.tzinfo is not None


def test_money_refuses_floats(migrated: Settings) -> None:
    def store_float() -> None:
        with db.session_scope(migrated) as session:
            bot = _bot(session, _user(session))
            bot.risk_per_trade = 2.1  # type: ignore[assignment]
            session.flush()

    with pytest.raises(Exception, match="never float"):
        store_float()
    with db.session_scope(migrated) as session:
        assert session.scalars(select(Bot)).all() == []


def test_client_order_id_is_unique(migrated: Settings) -> None:
    with db.session_scope(migrated) as session:
        bot = _bot(session, _user(session))
        bot_id = bot.id
    common = {
        "bot_id": bot_id,
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "market",
        "amount": Decimal(1),
        "status": "intent",
    }
    with db.session_scope(migrated) as session:
        session.add(Order(client_order_id="dup", **common))
    with pytest.raises(IntegrityError), db.session_scope(migrated) as session:
        session.add(Order(client_order_id="dup", **common))
    with db.session_scope(migrated) as session:
        assert len(session.scalars(select(Order)).all()) == 1


def test_foreign_keys_cascade_and_restrict(migrated: Settings) -> None:
    with db.session_scope(migrated) as session:
        user = _user(session)
        bot = _bot(session, user)
        session.add(BotStatusEvent(bot_id=bot.id, status="Starting", reason="created"))
        session.add(Position(bot_id=bot.id, symbol="BTC/USDT", amount=Decimal("0.5")))
        order = Order(
            bot_id=bot.id,
            client_order_id="c1",
            exchange="binance",
            symbol="BTC/USDT",
            side="buy",
            type="market",
            amount=Decimal(1),
            status="filled",
        )
        session.add(order)
        session.flush()
        session.add(
            Trade(
                bot_id=bot.id,
                order_id=order.id,
                exchange_trade_id="t1",
                symbol="BTC/USDT",
                side="buy",
                price=Decimal("100"),
                amount=Decimal(1),
                fee=Decimal("0.001"),
                fee_currency="BTC",
                timestamp=datetime.now(UTC),
            )
        )
        bot_id = bot.id

    # A bot with fills cannot be deleted: its history is a financial record.
    def delete_bot() -> None:
        with db.session_scope(migrated) as session:
            session.delete(session.get(Bot, bot_id))

    with pytest.raises(IntegrityError):
        delete_bot()
    with db.session_scope(migrated) as session:
        assert session.get(Bot, bot_id) is not None
        assert len(session.scalars(select(BotStatusEvent)).all()) == 1
    # A bot without orders deletes with its status events and positions.
    with db.session_scope(migrated) as session:
        user = session.scalars(select(User)).one()
        other = _bot(session, user, name="b2")
        session.add(BotStatusEvent(bot_id=other.id, status="Starting"))
        session.add(Position(bot_id=other.id, symbol="ETH/USDT"))
        other_id = other.id
    with db.session_scope(migrated) as session:
        session.delete(session.get(Bot, other_id))
    with db.session_scope(migrated) as session:
        events = session.scalars(select(BotStatusEvent)).all()
        assert [e.bot_id for e in events] == [bot_id]
        assert [p.bot_id for p in session.scalars(select(Position)).all()] == [bot_id]


def test_trades_newest_first_query(migrated: Settings) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    with db.session_scope(migrated) as session:
        bot = _bot(session, _user(session))
        order = Order(
            bot_id=bot.id,
            client_order_id="c1",
            exchange="binance",
            symbol="BTC/USDT",
            side="buy",
            type="market",
            amount=Decimal(5),
            status="filled",
        )
        session.add(order)
        session.flush()
        for i in range(5):
            session.add(
                Trade(
                    bot_id=bot.id,
                    order_id=order.id,
                    exchange_trade_id=f"t{i}",
                    symbol="BTC/USDT",
                    side="buy",
                    price=Decimal(100 + i),
                    amount=Decimal(1),
                    timestamp=base + timedelta(minutes=i),
                )
            )
    with db.session_scope(migrated) as session:
        rows = session.scalars(select(Trade).order_by(Trade.timestamp.desc()).limit(2)).all()
        assert [r.exchange_trade_id for r in rows] == ["t4", "t3"]
        assert rows[0].timestamp == base + timedelta(minutes=4)


def test_record_backtest_run(migrated: Settings) -> None:
    run_id = record_backtest_run(
        migrated,
        strategy="sma_cross",
        params={"fast": 10, "slow": 50},
        symbol="BTC/USDT",
        timeframe="1h",
        start="2021-01-01",
        end=1640995200000,
        metrics={"sharpe": float("nan"), "total_return": 0.25},
    )
    run = get_backtest_run(migrated, run_id)
    assert run is not None
    assert run.metrics == {"sharpe": None, "total_return": 0.25}
    assert run.start == datetime(2021, 1, 1, tzinfo=UTC)
    assert run.end == datetime(2022, 1, 1, tzinfo=UTC)


def test_check_database_reports_latency_and_pool(migrated: Settings) -> None:
    report = db.check_database(migrated)
    assert report["status"] == "healthy"
    assert report["latency_ms"] >= 0
    assert "class" in report["pool"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_lookups_by_client_order_id_stay_on_the_index_as_orders_grow(migrated: Settings) -> None:
    """A statement prepared on a small table is planned again as the table grows (PostgreSQL's
    plan cache; SQLite plans each statement anew).

    A generic plan made while ``orders`` held a few rows seq-scanned it for the life of the
    connection; the engines ask for a plan per execution instead.
    """
    engine = db.get_engine(migrated)
    insert_orders = (
        "INSERT INTO orders (client_order_id, exchange, symbol, side, type, amount, filled,"
        " status, created_at, updated_at) SELECT 'c' || g, 'paper', 'BTC/USDT', 'buy',"
        " 'market', 1, 0, 'filled', now(), now() FROM generate_series(%s::int, %s::int) AS g"
    )
    with engine.connect() as conn:
        conn.exec_driver_sql(insert_orders, (1, 3))
        conn.exec_driver_sql(
            "PREPARE by_cids(text[]) AS SELECT id FROM orders WHERE client_order_id = ANY($1)"
        )
        for _ in range(6):  # past the point where PostgreSQL may switch to a generic plan
            conn.exec_driver_sql("EXECUTE by_cids(ARRAY['c1', 'c2'])")
        conn.exec_driver_sql(insert_orders, (4, 20_000))
        plan = "\n".join(
            str(row[0]) for row in conn.exec_driver_sql("EXPLAIN EXECUTE by_cids(ARRAY['c1'])")
        )
        conn.rollback()
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan
