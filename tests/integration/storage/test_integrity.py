"""Integrity check: every rule finds its seeded bad row, nothing on clean books, repair."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import delete, inspect, select, text, update
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from cryptoorchestrator.cli.main import app as cli_app
from cryptoorchestrator.platform.data.store import OhlcvStore
from cryptoorchestrator.platform.errors import StorageError
from cryptoorchestrator.platform.exchange.execution import (
    Candle,
    ExchangeOrder,
    MarketInfo,
    OrderRequest,
    Ticker,
)
from cryptoorchestrator.platform.exchange.paper import PaperBroker
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage import db, integrity
from cryptoorchestrator.platform.storage.models import (
    Bot,
    ExchangeAccount,
    IntegrityFinding,
    Order,
    PaperBalance,
    Position,
    Trade,
    User,
)

NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)
BTC = MarketInfo(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=Decimal("0.00001"),
    price_tick=Decimal("0.01"),
    min_amount=Decimal("0.00001"),
    min_notional=Decimal("5"),
)


class Prices:
    """A market-data source with one fixed quote (the paper broker's only input)."""

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        return {"BTC/USDT": BTC}

    async def fetch_ticker(self, symbol: str) -> Ticker:
        return Ticker(
            "BTC/USDT", last=Decimal("60000"), bid=Decimal("59999.99"), ask=Decimal("60000.01")
        )

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        return []

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Books:
    settings: Settings
    bot_id: int
    account_id: int
    bot_order_id: int
    open_order_id: int
    trade_id: int


@pytest.fixture
def books(db_url: str, tmp_path: Path) -> Iterator[Books]:
    """Clean books made by the real paper broker, as a paper bot leaves them.

    The bot's own rows (order, fill, position) copy the broker's answer; the position is
    computed here by hand (an oracle independent of the ledger the check replays).
    """
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        var_dir=tmp_path / "var",
        secret_key="x" * 32,
    )
    db.upgrade(settings)
    with db.session_scope(settings) as s:
        user = User(email="i@example.com", password_hash="x")
        s.add(user)
        s.flush()
        account = ExchangeAccount(user_id=user.id, name="paper", exchange="binance", mode="paper")
        s.add(account)
        s.flush()
        bot = Bot(
            user_id=user.id,
            name="b1",
            trading_pair="BTC/USDT",
            strategy="sma_cross",
            timeframe="1h",
            exchange_account_id=account.id,
            risk_per_trade=Decimal(1),
            max_position_size=Decimal(50),
            starting_balance=Decimal(1000),
        )
        s.add(bot)
        s.flush()
        bot_id, account_id = bot.id, account.id

    async def trade() -> tuple[ExchangeOrder, ExchangeOrder]:
        broker = PaperBroker(settings, account_id, Prices(), clock=lambda: NOW)
        await broker.fund({"USDT": Decimal(1000)}, deposit_key=f"bot{bot_id}")
        filled = await broker.create_order(
            OrderRequest("BTC/USDT", OrderSide.BUY, OrderType.MARKET, Decimal("0.01"), "b1-1")
        )
        resting = await broker.create_order(
            OrderRequest(
                "BTC/USDT",
                OrderSide.SELL,
                OrderType.LIMIT,
                Decimal("0.004"),
                "b1-2",
                price=Decimal("90000"),
            )
        )
        assert isinstance(filled, ExchangeOrder)
        assert isinstance(resting, ExchangeOrder)
        return filled, resting

    filled, resting = asyncio.run(trade())
    assert filled.status is OrderStatus.FILLED
    assert resting.status is OrderStatus.OPEN
    fill = filled.fills[0]
    assert fill.fee_currency == "BTC"
    with db.session_scope(settings) as s:
        order = Order(
            bot_id=bot_id,
            client_order_id="b1-1",
            exchange_order_id=filled.order_id,
            exchange="binance",
            symbol="BTC/USDT",
            side="buy",
            type="market",
            amount=Decimal("0.01"),
            filled=Decimal("0.01"),
            average_price=fill.price,
            status="filled",
        )
        open_order = Order(
            bot_id=bot_id,
            client_order_id="b1-2",
            exchange_order_id=resting.order_id,
            exchange="binance",
            symbol="BTC/USDT",
            side="sell",
            type="limit",
            price=Decimal("90000"),
            amount=Decimal("0.004"),
            status="open",
        )
        s.add_all([order, open_order])
        s.flush()
        row = Trade(
            bot_id=bot_id,
            order_id=order.id,
            exchange_trade_id=fill.trade_id,
            symbol="BTC/USDT",
            side="buy",
            price=fill.price,
            amount=fill.amount,
            fee=fill.fee,
            fee_currency=fill.fee_currency,
            timestamp=NOW,
        )
        s.add(row)
        received = fill.amount - fill.fee  # the fee is paid in the BTC bought
        s.add(
            Position(
                bot_id=bot_id,
                symbol="BTC/USDT",
                amount=received,
                average_price=fill.price * fill.amount / received,
                realized_pnl=Decimal(0),
                fees_paid=fill.fee * fill.price,
            )
        )
        s.flush()
        ids = (order.id, open_order.id, row.id)
    ts = [int((NOW + timedelta(hours=h)).timestamp() * 1000) for h in range(-24, 24)]
    prices = [60000.0] * len(ts)
    OhlcvStore(settings.data_dir).write(
        "binance",
        "BTC/USDT",
        "1h",
        pa.table(
            {
                "timestamp": pa.array(ts, pa.int64()),
                "open": prices,
                "high": prices,
                "low": prices,
                "close": prices,
                "volume": [1.0] * len(ts),
            }
        ),
    )
    yield Books(settings, bot_id, account_id, *ids)
    db.dispose_engines()


def _kinds(report: integrity.CheckReport) -> set[str]:
    return {f.kind for f in report.findings}


def test_clean_books_have_no_findings(books: Books) -> None:
    report = integrity.run_check(books.settings)
    assert report.findings == []
    assert report.ok
    health = integrity.integrity_health(books.settings, run=True)
    assert health["status"] == "ok"
    assert health["open_findings"] == 0


def _orphan_trade(b: Books) -> None:
    """Insert a fill of an order that does not exist, past the foreign key."""
    url = make_url(b.settings.database_url)
    values = "(NULL, 999999, 'x', 'BTC/USDT', 'buy', '1', '1', '0', '2024-03-01 12:00:00')"
    cols = "(bot_id, order_id, exchange_trade_id, symbol, side, price, amount, fee, timestamp)"
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database))  # foreign keys are off by default
        conn.execute(f"INSERT INTO trades {cols} VALUES {values}")  # noqa: S608
        conn.commit()
        conn.close()
        return
    with db.session_scope(b.settings) as s:
        s.execute(text("SET LOCAL session_replication_role = replica"))  # skips FK triggers
        s.execute(text(f"INSERT INTO trades {cols} VALUES {values}"))  # noqa: S608


def _exec(stmt_of: Callable[[Books], object]) -> Callable[[Books], None]:
    def run(b: Books) -> None:
        with db.session_scope(b.settings) as s:
            s.execute(stmt_of(b))  # type: ignore[call-overload]

    return run


BREAKERS: dict[str, tuple[Callable[[Books], None], set[str]]] = {
    "position_mismatch": (
        _exec(lambda b: update(Position).values(amount=Position.amount + 1)),
        {"position_mismatch"},
    ),
    "position_missing": (_exec(lambda b: delete(Position)), {"position_missing"}),
    "balance_mismatch": (
        _exec(
            lambda b: (
                update(PaperBalance)
                .where(PaperBalance.asset == "USDT")
                .values(free=PaperBalance.free + Decimal("0.01"))
            )
        ),
        {"balance_mismatch"},
    ),
    "balance_locked_mismatch": (
        # Moved from free to locked: the total still adds up, the locked amount does not.
        _exec(
            lambda b: (
                update(PaperBalance)
                .where(PaperBalance.asset == "BTC")
                .values(
                    free=PaperBalance.free - Decimal("0.001"),
                    locked=PaperBalance.locked + Decimal("0.001"),
                )
            )
        ),
        {"balance_locked_mismatch"},
    ),
    "order_fills_mismatch": (
        _exec(
            lambda b: (
                update(Order)
                .where(Order.id == b.bot_order_id)
                .values(status="canceled", filled=Decimal("0.005"))
            )
        ),
        {"order_fills_mismatch"},
    ),
    "order_status_unknown": (
        _exec(lambda b: update(Order).where(Order.id == b.open_order_id).values(status="lost")),
        {"order_status_unknown"},
    ),
    "order_illegal_state": (
        _exec(
            lambda b: (
                update(Order).where(Order.id == b.open_order_id).values(filled=Decimal("0.005"))
            )
        ),
        {"order_illegal_state"},
    ),
    "orphan_row": (_orphan_trade, {"orphan_row"}),
    "trade_outside_market_data": (
        _exec(
            lambda b: (
                update(Trade)
                .where(Trade.id == b.trade_id)
                .values(timestamp=NOW + timedelta(days=30))
            )
        ),
        {"trade_outside_market_data"},
    ),
}


@pytest.mark.parametrize("rule", sorted(BREAKERS))
def test_each_rule_finds_its_bad_row_and_quarantines_it(books: Books, rule: str) -> None:
    breaker, expected = BREAKERS[rule]
    breaker(books)
    report = integrity.run_check(books.settings)
    assert _kinds(report) == expected, report.findings
    assert report.recorded == len(report.findings) >= 1
    with db.session_scope(books.settings) as s:
        rows = s.scalars(select(IntegrityFinding)).all()
        assert {(r.kind, r.row_id) for r in rows} == {(f.kind, f.row_id) for f in report.findings}
        assert all(r.resolved_at is None and r.reason for r in rows)
    health = integrity.integrity_health(books.settings)
    assert health["status"] == "findings"
    assert health["counts"] == {k: 1 for k in expected}
    # Checking again quarantines nothing twice.
    again = integrity.run_check(books.settings)
    assert again.recorded == 0
    assert _kinds(again) == expected


def test_a_finding_fixed_by_hand_is_resolved_by_the_next_check(books: Books) -> None:
    with db.session_scope(books.settings) as s:
        s.execute(update(Order).where(Order.id == books.open_order_id).values(status="lost"))
    assert not integrity.run_check(books.settings).ok
    with db.session_scope(books.settings) as s:
        s.execute(update(Order).where(Order.id == books.open_order_id).values(status="open"))
    report = integrity.run_check(books.settings)
    assert report.ok
    assert report.resolved == 1
    with db.session_scope(books.settings) as s:
        row = s.scalars(select(IntegrityFinding)).one()
        assert row.resolved_at is not None
        assert row.resolution is not None


def test_repair_rebuilds_a_position_from_fills_and_resolves_its_finding(books: Books) -> None:
    with db.session_scope(books.settings) as s:
        before = s.scalars(select(Position)).one()
        want = (before.amount, before.average_price, before.fees_paid)
    BREAKERS["position_mismatch"][0](books)
    # An unrelated finding that repair must not touch.
    BREAKERS["order_status_unknown"][0](books)
    report = integrity.run_check(books.settings, repair=True)
    assert _kinds(report) == {"position_mismatch", "order_status_unknown"}
    assert len(report.repaired) == 1
    assert "amount" in report.repaired[0]
    with db.session_scope(books.settings) as s:
        pos = s.scalars(select(Position)).one()
        assert (pos.amount, pos.average_price, pos.fees_paid) == want
        rows = {r.kind: r for r in s.scalars(select(IntegrityFinding))}
        assert rows["position_mismatch"].resolved_at is not None
        assert "repaired" in (rows["position_mismatch"].resolution or "")
        assert rows["order_status_unknown"].resolved_at is None
        assert s.get(Order, books.open_order_id).status == "lost"  # type: ignore[union-attr]
    assert _kinds(integrity.run_check(books.settings)) == {"order_status_unknown"}


def test_cli_check_exit_codes_and_json(books: Books, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", books.settings.database_url)
    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(books.settings.data_dir))
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(books.settings.var_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        clean = runner.invoke(cli_app, ["db", "check", "--json"])
        assert clean.exit_code == 0, clean.output
        assert json.loads(clean.output)["ok"] is True
        BREAKERS["position_mismatch"][0](books)
        found = runner.invoke(cli_app, ["db", "check", "--json"])
        assert found.exit_code == 1
        body = json.loads(found.output)
        assert body["counts"] == {"position_mismatch": 1}
        repaired = runner.invoke(cli_app, ["db", "check", "--repair"])
        assert repaired.exit_code == 0, repaired.output
        assert "repaired position" in repaired.output
        assert runner.invoke(cli_app, ["db", "check"]).exit_code == 0
    finally:
        get_settings.cache_clear()


def test_findings_migration_upgrades_and_downgrades(db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, var_dir=tmp_path / "var")
    assert db.upgrade(settings, "0004") == "0004"
    assert db.upgrade(settings, "0005") == "0005"

    def has_table() -> bool:
        engine = db.create_db_engine(settings)
        try:
            with engine.connect() as conn:
                return inspect(conn).has_table("integrity_findings")
        finally:
            engine.dispose()

    assert has_table()
    assert db.downgrade(settings, "0004") == "0004"
    assert not has_table()
    with pytest.raises(StorageError, match="db upgrade"):
        integrity.run_check(settings)
    assert db.upgrade(settings, "0005") == "0005"
    assert has_table()
    db.dispose_engines()


def test_check_reads_one_snapshot_while_the_paper_broker_books(books: Books) -> None:
    """Bookings move balances, orders and fills together; a check never sees half of one."""
    started = threading.Event()
    stop = threading.Event()
    booked: list[str] = []
    errors: list[BaseException] = []

    async def book() -> None:
        broker = PaperBroker(books.settings, books.account_id, Prices(), clock=lambda: NOW)
        i = 0
        while not stop.is_set():
            i += 1
            side = OrderSide.BUY if i % 2 else OrderSide.SELL
            answer = await broker.create_order(
                OrderRequest("BTC/USDT", side, OrderType.MARKET, Decimal("0.0001"), f"w-{i}")
            )
            assert isinstance(answer, ExchangeOrder), answer
            booked.append(answer.order_id)
            if len(booked) >= 3:
                started.set()

    def writer() -> None:
        try:
            asyncio.run(book())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(120)
        reports = [integrity.run_check(books.settings, record=False) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len(booked) >= 3
    assert [r.findings for r in reports] == [[], [], []]
    assert integrity.run_check(books.settings).ok  # and after the last booking
