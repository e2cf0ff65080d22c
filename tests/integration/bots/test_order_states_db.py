"""Order status writes obey the order state machine, on SQLite and PostgreSQL.

A late or out-of-order write (a submitted mark, an exchange answer, the loop's own marks)
leaves a final order exactly as it is, and reconciliation never moves a submitted order back to
an intent: an order the exchange never received stays submitted and is sent again, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from cryptoorchestrator.platform.bots import records
from cryptoorchestrator.platform.bots.ledger import BotSettings
from cryptoorchestrator.platform.bots.runtime import BotRuntime
from cryptoorchestrator.platform.bots.writes import OrderWrites
from cryptoorchestrator.platform.errors import IllegalOrderTransitionError
from cryptoorchestrator.platform.exchange import paper
from cryptoorchestrator.platform.exchange.execution import (
    Candle,
    ExchangeOrder,
    Fill,
    MarketInfo,
    OrderRequest,
    Ticker,
)
from cryptoorchestrator.platform.exchange.paper import PaperBroker
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType
from cryptoorchestrator.platform.model import orders as lifecycle
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount, Order, User

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
CANDLES = [Candle(T0 + i * HOUR, 60_000.0, 60_100.0, 59_900.0, 60_000.0, 5.0) for i in range(10)]
#: The newest closed candle (the last one of ``CANDLES`` is still forming).
NEWEST = CANDLES[-2].timestamp_ms
NOW = datetime.fromtimestamp((T0 + 9 * HOUR + 60_000) / 1000, UTC)
BTC = MarketInfo(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=Decimal("0.00001"),
    price_tick=Decimal("0.01"),
    min_amount=Decimal("0.00001"),
    min_notional=Decimal("5"),
)


class Market:
    """A market-data source of fixed candles and quote (the paper broker's only input)."""

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        return {"BTC/USDT": BTC}

    async def fetch_ticker(self, symbol: str) -> Ticker:
        return Ticker(
            "BTC/USDT", last=Decimal("60000"), bid=Decimal("59999.99"), ask=Decimal("60000.01")
        )

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        found = [c for c in CANDLES if since_ms is None or c.timestamp_ms >= since_ms]
        return found[-limit:] if limit else found

    async def close(self) -> None:
        return None


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[tuple[Settings, int, int]]:
    """A migrated database with a user, a bot and a paper account: (settings, bot, account)."""
    settings = Settings(
        database_url=db_url,
        var_dir=tmp_path / "var",
        log_dir=tmp_path / "logs",
        secret_key="order-states-secret-key-0123456789",
    )
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        user = User(email="fsm@example.com", password_hash="x")
        session.add(user)
        session.flush()
        bot = Bot(
            user_id=user.id,
            name="fsm",
            trading_pair="BTC/USDT",
            strategy="sma_cross",
            timeframe="1h",
            risk_per_trade=Decimal(1),
            max_position_size=Decimal(50),
        )
        account = ExchangeAccount(user_id=user.id, name="paper", exchange="binance", mode="paper")
        session.add_all([bot, account])
        session.flush()
        ids = (bot.id, account.id)
    yield settings, *ids
    db.dispose_engines()


def _store(settings: Settings, bot_id: int, cid: str, status: str, **values: Any) -> None:
    with db.session_scope(settings) as session:
        session.add(
            Order(
                bot_id=bot_id,
                client_order_id=cid,
                exchange="binance",
                symbol="BTC/USDT",
                side="buy",
                type="market",
                price=Decimal("60000"),
                amount=Decimal("0.01"),
                filled=values.pop("filled", Decimal(0)),
                status=status,
                **values,
            )
        )


def _row(settings: Settings, cid: str) -> tuple[Any, ...]:
    with db.session_scope(settings) as session:
        o = session.scalars(select(Order).where(Order.client_order_id == cid)).one()
        return (
            o.status,
            o.status_reason,
            o.filled,
            o.average_price,
            o.exchange_order_id,
            o.submitted_at,
            o.closed_at,
        )


def _runtime(settings: Settings, bot_id: int, account_id: int, signals: Any = None) -> BotRuntime:
    broker = PaperBroker(settings, account_id, Market(), clock=lambda: NOW)  # type: ignore[arg-type]

    async def approve(check: OrderCheck) -> RiskDecision:
        return RiskDecision(True)

    cfg = BotSettings(
        bot_id=bot_id,
        symbol="BTC/USDT",
        timeframe="1h",
        exchange="binance",
        starting_balance=Decimal(10_000),
        max_position_pct=Decimal(50),
        risk_per_trade_pct=Decimal(1),
        window=5,
    )

    def hold(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        return False, False, False, False

    return BotRuntime(
        cfg, settings, broker, signals or hold, approve, poll_interval_s=0, settle_s=0.0
    )


def _answer(cid: str, status: OrderStatus, filled: str = "0") -> ExchangeOrder:
    return ExchangeOrder(
        order_id="late-1",
        client_order_id=cid,
        symbol="BTC/USDT",
        side=OrderSide.BUY,
        type=OrderType.MARKET,
        status=status,
        amount=Decimal("0.01"),
        filled=Decimal(filled),
        average_price=Decimal("60001") if filled != "0" else None,
    )


FINALS = [OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.DENIED]


@pytest.mark.parametrize("final", FINALS, ids=str)
def test_late_writes_leave_a_final_order_as_it_is(
    world: tuple[Settings, int, int], final: OrderStatus
) -> None:
    settings, bot_id, account_id = world
    cid = f"co{bot_id}-{NEWEST}-L"
    closed = datetime(2024, 1, 1, 9, tzinfo=UTC)
    filled = Decimal("0.01") if final is OrderStatus.FILLED else Decimal(0)
    _store(
        settings,
        bot_id,
        cid,
        final.value,
        filled=filled,
        status_reason="the final word",
        submitted_at=closed - timedelta(seconds=1),
        closed_at=closed,
    )
    before = _row(settings, cid)
    assert before[0] == final.value

    # The batched submitted mark (a resend racing with the answer): stored, so no error, and
    # nothing written.
    assert OrderWrites(settings).mark_submitted([(cid, "signal")]) == [None]
    assert _row(settings, cid) == before

    # The exchange's late answers: submitted, open, partly filled, and another final word.
    rt = _runtime(settings, bot_id, account_id)
    other = OrderStatus.REJECTED if final is OrderStatus.CANCELED else OrderStatus.CANCELED
    for late in (
        _answer(cid, OrderStatus.SUBMITTED),
        _answer(cid, OrderStatus.OPEN),
        _answer(cid, OrderStatus.PARTIALLY_FILLED, "0.005"),
        _answer(cid, other),
    ):
        assert rt.record_answer(late, []) == []  # the loop's own recording step
        assert _row(settings, cid) == before, late.status

    # The loop's own marks (a lapsed send, a stale intent, a denial).
    for event in (
        lifecycle.OrderCanceled(cid, "not sent: late"),
        lifecycle.OrderRejected(cid, "late"),
        lifecycle.OrderDenied(cid, "late"),
        lifecycle.OrderSubmitted(cid, "late"),
    ):
        assert rt._mark(event) is False  # noqa: SLF001
        assert _row(settings, cid) == before, event
    # Nothing became final here: the risk gate is told of no closed order.
    assert rt.drain_closed_orders() == []


def test_an_answer_moves_an_order_forward_and_not_back(world: tuple[Settings, int, int]) -> None:
    """The same writers move an order forward (submitted, open, filled); once filled, an
    older answer arriving late changes nothing."""
    settings, bot_id, account_id = world
    cid = f"co{bot_id}-{NEWEST}-L"
    _store(settings, bot_id, cid, OrderStatus.INTENT.value)
    assert OrderWrites(settings).mark_submitted([(cid, "signal")]) == [None]
    assert _row(settings, cid)[:2] == ("submitted", "signal")
    rt = _runtime(settings, bot_id, account_id)
    rt.record_answer(_answer(cid, OrderStatus.OPEN), [])
    assert _row(settings, cid)[0] == "open"
    filled = _answer(cid, OrderStatus.FILLED, "0.01")
    rt.record_answer(filled, [])
    # Filled by the exchange, but its fill is not stored yet: partly filled in our books.
    assert _row(settings, cid)[0] == "partially_filled"
    assert rt.drain_closed_orders() == []
    fill = Fill("late-1-1", "late-1", "BTC/USDT", OrderSide.BUY, Decimal("60001"),
                Decimal("0.01"), Decimal("0.00001"), "BTC", NEWEST + HOUR)  # fmt: skip
    assert rt.record_answer(filled, [fill]) == [fill]
    after = _row(settings, cid)
    assert after[0] == "filled"
    assert after[6] is not None
    assert rt.drain_closed_orders() == [cid]
    rt.record_answer(_answer(cid, OrderStatus.OPEN), [])  # an older answer, late
    assert _row(settings, cid) == after


def test_a_batch_of_answers_moves_each_order_forward_only(
    world: tuple[Settings, int, int],
) -> None:
    """The bots of a process record their answers together, one statement per kind of row:
    each order of the batch moves as the state machine allows, a late one stays put."""
    settings, bot_id, account_id = world
    a, b, done = (f"co{bot_id}-{NEWEST}-{tag}" for tag in ("A", "B", "C"))
    _store(settings, bot_id, a, "submitted")
    _store(settings, bot_id, b, "submitted")
    closed = datetime(2024, 1, 1, 9, tzinfo=UTC)
    _store(settings, bot_id, done, "filled", filled=Decimal("0.01"), closed_at=closed)
    finished = _row(settings, done)
    rt = _runtime(settings, bot_id, account_id)
    store = records.store_answers  # the batch's one transaction
    assert store([(rt, _answer(c, OrderStatus.OPEN), []) for c in (a, b, done)]) == [[]] * 3
    assert [_row(settings, c)[0] for c in (a, b)] == ["open", "open"]
    assert _row(settings, done) == finished
    # b answered twice in one batch (still open, then canceled): it ends canceled
    answers = [
        (rt, _answer(a, OrderStatus.CANCELED), []),
        (rt, _answer(b, OrderStatus.OPEN), []),
        (rt, _answer(b, OrderStatus.CANCELED), []),
        (rt, _answer(done, OrderStatus.CANCELED), []),
    ]
    assert store(answers) == [[]] * 4
    for c in (a, b):
        row = _row(settings, c)
        assert row[0] == "canceled"
        assert row[6] is not None
    assert _row(settings, done) == finished
    assert rt.drain_closed_orders() == [a, b]


def test_reconcile_keeps_a_submitted_order_submitted_and_sends_it_once(
    world: tuple[Settings, int, int],
) -> None:
    """An order marked submitted that never reached the exchange stays submitted (never an
    intent again); the decision of the newest candle sends it under the same id, once, and
    an older one is canceled as stale."""
    settings, bot_id, account_id = world
    current = f"co{bot_id}-{NEWEST}-L"
    stale = f"co{bot_id}-{NEWEST - 3 * HOUR}-L"
    long_ago = datetime(2024, 1, 1, tzinfo=UTC)
    for cid in (current, stale):
        _store(settings, bot_id, cid, "submitted", status_reason="signal", submitted_at=long_ago)

    def buy(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        return True, False, False, False

    rt = _runtime(settings, bot_id, account_id, buy)
    broker = rt.client
    assert isinstance(broker, PaperBroker)

    async def scenario() -> tuple[tuple[Any, ...], tuple[Any, ...], list[str]]:
        await broker.fund({"USDT": Decimal(10_000)})
        await rt.prepare()  # reconciles: the paper exchange knows neither order
        after_reconcile = _row(settings, current)
        closed = rt.drain_closed_orders()
        assert await rt.poll_once()  # the newest candle's decision: sends the current one
        assert not await rt.poll_once()  # nothing new: nothing sent again
        await rt.close()
        return after_reconcile, _row(settings, stale), closed

    after_reconcile, stale_row, closed = asyncio.run(scenario())
    assert after_reconcile[:2] == ("submitted", "signal")
    assert stale_row[0] == "canceled"
    assert closed == [stale]
    final = _row(settings, current)
    assert final[0] == "filled"
    assert final[2] == final[2].quantize(Decimal("0.00001")) > 0
    with db.session_scope(settings) as session:
        booked = session.scalars(
            select(Order).where(Order.client_order_id == f"paper:{account_id}:{current}")
        ).all()
        assert [o.status for o in booked] == ["filled"]
        assert booked[0].amount == final[2]
        assert not session.scalars(
            select(Order).where(Order.client_order_id == f"paper:{account_id}:{stale}")
        ).all()


def test_the_paper_book_refuses_to_fill_an_order_canceled_meanwhile(
    world: tuple[Settings, int, int],
) -> None:
    """A resting paper order read open, then canceled by another writer before the fill is
    written: the guarded write refuses (the transaction fails) instead of overwriting."""
    settings, _, account_id = world
    broker = PaperBroker(settings, account_id, Market(), clock=lambda: NOW)  # type: ignore[arg-type]
    request = OrderRequest(
        "BTC/USDT", OrderSide.BUY, OrderType.LIMIT, Decimal("0.01"), "rest-1", Decimal("50000")
    )

    async def place() -> ExchangeOrder:
        await broker.fund({"USDT": Decimal(10_000)})
        placed = await broker.create_order(request)
        assert isinstance(placed, ExchangeOrder)
        return placed

    placed = asyncio.run(place())
    assert placed.status is OrderStatus.OPEN
    key = f"paper:{account_id}:rest-1"
    with db.session_scope(settings) as session:
        order = session.scalars(select(Order).where(Order.client_order_id == key)).one()
        assert order.status == "open"
        # another writer cancels it and commits
        with db.get_engine(settings).begin() as other:
            other.execute(update(Order).where(Order.id == order.id).values(status="canceled"))
        with pytest.raises(IllegalOrderTransitionError) as err:
            paper._write_status(  # noqa: SLF001 (the book's one status write)
                session, order, lifecycle.OrderFilled(key), filled=order.amount
            )
        assert err.value.status == "canceled"
        session.rollback()
    with db.session_scope(settings) as session:
        row = session.scalars(select(Order).where(Order.client_order_id == key)).one()
        assert (row.status, row.filled) == ("canceled", 0)
