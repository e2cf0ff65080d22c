"""Paper broker: exact virtual balances in the database, fills, resting orders, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from cryptoorchestrator.platform.exchange.execution import (
    Balance,
    Candle,
    ExchangeOrder,
    MarketInfo,
    OrderRejected,
    OrderRequest,
    Ticker,
)
from cryptoorchestrator.platform.exchange.paper import PaperBroker
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import ExchangeAccount, Order, Trade, User

BTC = MarketInfo(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=Decimal("0.00001"),
    price_tick=Decimal("0.01"),
    min_amount=Decimal("0.00001"),
    min_notional=Decimal("5"),
)
NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)


class Prices:
    """A market-data source whose quote the test sets (the broker's only input)."""

    def __init__(self) -> None:
        self.ticker = Ticker(
            "BTC/USDT", last=Decimal("60000"), bid=Decimal("59999.99"), ask=Decimal("60000.01")
        )
        self.closed = False

    def quote(self, bid: str, ask: str) -> None:
        self.ticker = Ticker("BTC/USDT", last=Decimal(bid), bid=Decimal(bid), ask=Decimal(ask))

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        return {"BTC/USDT": BTC}

    async def fetch_ticker(self, symbol: str) -> Ticker:
        return self.ticker

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        return [Candle(0, 1.0, 2.0, 0.5, 1.5, 10.0)]

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def setup(db_url: str, tmp_path: object) -> Iterator[tuple[Settings, int]]:
    settings = Settings(database_url=db_url, secret_key="x" * 32)
    db.upgrade(settings)
    with db.session_scope(settings) as s:
        user = User(email="p@example.com", password_hash="x")
        s.add(user)
        s.flush()
        account = ExchangeAccount(user_id=user.id, name="paper", exchange="binance", mode="paper")
        s.add(account)
        s.flush()
        account_id = account.id
    yield settings, account_id
    db.dispose_engines()


def broker(setup: tuple[Settings, int], prices: Prices, **kw: object) -> PaperBroker:
    settings, account_id = setup
    return PaperBroker(settings, account_id, prices, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def req(side: str, otype: str, amount: str, cid: str, price: str | None = None) -> OrderRequest:
    return OrderRequest(
        "BTC/USDT",
        OrderSide(side),
        OrderType(otype),
        Decimal(amount),
        cid,
        Decimal(price) if price else None,
    )


def test_market_buy_then_sell_moves_balances_exactly(setup: tuple[Settings, int]) -> None:
    prices = Prices()
    b = broker(setup, prices)

    async def scenario() -> tuple[object, ...]:
        await b.fund({"USDT": Decimal("10000")})
        buy = await b.create_order(req("buy", "market", "0.0123456", "buy-1"))
        after_buy = await b.fetch_balances()
        prices.quote("61000.00", "61000.01")
        sell = await b.create_order(req("sell", "market", "0.01", "sell-1"))
        return buy, after_buy, sell, await b.fetch_balances()

    buy, after_buy, sell, final = asyncio.run(scenario())
    assert isinstance(buy, ExchangeOrder)
    assert buy.status is OrderStatus.FILLED
    assert buy.amount == Decimal("0.01234")  # rounded down to the lot step
    assert buy.average_price == Decimal("60000.01")  # buys pay the ask
    fee = Decimal("0.01234") * Decimal("0.001")
    assert buy.fee == fee
    assert buy.fee_currency == "BTC"
    assert after_buy["USDT"].free == Decimal("10000") - Decimal("0.01234") * Decimal("60000.01")
    assert after_buy["BTC"].free == Decimal("0.01234") - fee
    assert isinstance(sell, ExchangeOrder)
    proceeds = Decimal("0.01") * Decimal("61000.00")
    assert final["USDT"].free == after_buy["USDT"].free + proceeds - proceeds * Decimal("0.001")
    assert final["BTC"].free == after_buy["BTC"].free - Decimal("0.01")
    assert final["BTC"].locked == 0


def test_slippage_moves_market_fills_against_the_trader(setup: tuple[Settings, int]) -> None:
    b = broker(setup, Prices(), slippage_bps=10)

    async def scenario() -> object:
        await b.fund({"USDT": 1000})
        return await b.create_order(req("buy", "market", "0.001", "s-1"))

    order = asyncio.run(scenario())
    assert isinstance(order, ExchangeOrder)
    assert order.average_price == Decimal("60060.02")  # 60000.01 * 1.001, on the tick


def test_refusals_are_values_and_leave_no_trace(setup: tuple[Settings, int]) -> None:
    settings, _ = setup
    b = broker(setup, Prices())

    async def scenario() -> tuple[object, object, object]:
        await b.fund({"USDT": 100})
        poor = await b.create_order(req("buy", "market", "0.01", "poor-1"))
        tiny = await b.create_order(req("buy", "market", "0.00005", "tiny-1"))
        lookup = await b.fetch_order("BTC/USDT", client_order_id="poor-1")
        return poor, tiny, lookup

    poor, tiny, lookup = asyncio.run(scenario())
    assert isinstance(poor, OrderRejected)
    assert poor.code == "insufficient_funds"
    assert isinstance(tiny, OrderRejected)
    assert tiny.code == "min_notional"
    assert lookup is None  # proves the order does not exist: safe to send again
    with db.session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 0
    assert asyncio.run(b.fetch_balances())["USDT"].free == 100


def test_limit_order_rests_locks_funds_and_fills_when_price_crosses(
    setup: tuple[Settings, int],
) -> None:
    prices = Prices()
    b = broker(setup, prices)

    async def scenario() -> tuple[object, ...]:
        await b.fund({"USDT": 1000})
        placed = await b.create_order(req("buy", "limit", "0.01", "lim-1", "59000"))
        resting = await b.fetch_balances()
        still_open = await b.fetch_open_orders("BTC/USDT")
        prices.quote("58990.00", "58990.01")
        done = await b.fetch_order("BTC/USDT", client_order_id="lim-1")
        return placed, resting, still_open, done, await b.fetch_balances()

    placed, resting, still_open, done, final = asyncio.run(scenario())
    assert isinstance(placed, ExchangeOrder)
    assert placed.status is OrderStatus.OPEN
    assert resting["USDT"].locked == Decimal("590")
    assert resting["USDT"].free == Decimal("410")
    assert [o.client_order_id for o in still_open] == ["lim-1"]  # type: ignore[attr-defined]
    assert isinstance(done, ExchangeOrder)
    assert done.status is OrderStatus.FILLED
    assert done.average_price == Decimal("59000")  # a resting order fills at its price
    assert final["USDT"].total == Decimal("410")
    assert final["BTC"].free == Decimal("0.01") - Decimal("0.00001")


def test_marketable_limit_fills_at_the_better_quote(setup: tuple[Settings, int]) -> None:
    b = broker(setup, Prices())

    async def scenario() -> object:
        await b.fund({"USDT": 1000})
        return await b.create_order(req("buy", "limit", "0.001", "lim-x", "61000"))

    order = asyncio.run(scenario())
    assert isinstance(order, ExchangeOrder)
    assert order.status is OrderStatus.FILLED
    assert order.average_price == Decimal("60000.01")


def test_cancel_releases_locked_funds_and_is_idempotent(setup: tuple[Settings, int]) -> None:
    b = broker(setup, Prices())

    async def scenario() -> tuple[object, ...]:
        await b.fund({"USDT": 1000, "BTC": "0.5"})
        await b.create_order(req("sell", "limit", "0.2", "ask-1", "70000"))
        locked = await b.fetch_balances()
        first = await b.cancel_order("BTC/USDT", client_order_id="ask-1")
        again = await b.cancel_order("BTC/USDT", client_order_id="ask-1")
        unknown = await b.cancel_order("BTC/USDT", order_id="999999")
        return locked, first, again, unknown, await b.fetch_balances()

    locked, first, again, unknown, final = asyncio.run(scenario())
    assert locked["BTC"].locked == Decimal("0.2")  # type: ignore[index]
    assert isinstance(first, ExchangeOrder)
    assert first.status is OrderStatus.CANCELED
    assert again == first
    assert unknown is None
    assert final["BTC"].free == Decimal("0.5")  # type: ignore[index]
    assert final["BTC"].locked == 0  # type: ignore[index]


def test_same_client_order_id_never_makes_a_second_order(setup: tuple[Settings, int]) -> None:
    settings, _ = setup
    b = broker(setup, Prices())

    async def scenario() -> tuple[object, object]:
        await b.fund({"USDT": 1000})
        first = await b.create_order(req("buy", "market", "0.001", "dup-1"))
        second = await b.create_order(req("buy", "market", "0.001", "dup-1"))
        return first, second

    first, second = asyncio.run(scenario())
    assert first == second
    with db.session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1
        assert s.scalar(select(func.count()).select_from(Trade)) == 1


def test_state_survives_a_restart(setup: tuple[Settings, int]) -> None:
    prices = Prices()

    async def before() -> ExchangeOrder:
        b = broker(setup, prices)
        await b.fund({"USDT": 1000})
        await b.create_order(req("buy", "market", "0.002", "r-1"))
        placed = await b.create_order(req("buy", "limit", "0.002", "r-2", "50000"))
        assert isinstance(placed, ExchangeOrder)
        await b.close()
        return placed

    placed = asyncio.run(before())
    assert prices.closed

    async def after() -> tuple[object, ...]:
        b = broker(setup, prices)  # a new process: nothing in memory
        await b.fund({"USDT": 5})  # a restarted bot funding again changes nothing
        filled = await b.fetch_order("BTC/USDT", client_order_id="r-1")
        open_orders = await b.fetch_open_orders()
        trades = await b.fetch_my_trades("BTC/USDT")
        return filled, open_orders, trades, await b.fetch_balances()

    filled, open_orders, trades, balances = asyncio.run(after())
    assert isinstance(filled, ExchangeOrder)
    assert filled.status is OrderStatus.FILLED
    assert open_orders == [placed]
    assert [t.order_id for t in trades] == [filled.order_id]  # type: ignore[attr-defined]
    assert balances["USDT"].locked == Decimal("100")  # type: ignore[index]
    assert balances["USDT"].total == Decimal(1000) - Decimal("0.002") * Decimal("60000.01")  # type: ignore[index]


def test_market_data_passes_through(setup: tuple[Settings, int]) -> None:
    b = broker(setup, Prices())
    candles = asyncio.run(b.fetch_ohlcv("BTC/USDT", "1h"))
    assert candles == [Candle(0, 1.0, 2.0, 0.5, 1.5, 10.0)]
    assert asyncio.run(b.market("btc-usdt")) == BTC


def test_per_bot_deposits_accumulate_once_each_even_concurrently(
    setup: tuple[Settings, int],
) -> None:
    async def scenario() -> dict[str, Decimal]:
        first, second = broker(setup, Prices()), broker(setup, Prices())
        # Two bots sharing the account start at once: both create the USDT row.
        await asyncio.gather(
            first.fund({"USDT": 1000}, deposit_key="bot1"),
            second.fund({"USDT": 500}, deposit_key="bot2"),
        )
        await first.fund({"USDT": 1000}, deposit_key="bot1")  # a restart: no second deposit
        balances = await first.fetch_balances()
        return {a: b.free for a, b in balances.items()}

    assert asyncio.run(scenario()) == {"USDT": Decimal(1500)}  # markers are not assets


def test_order_fills_at_the_quote_the_caller_just_read(setup: tuple[Settings, int]) -> None:
    prices = Prices()
    b = broker(setup, prices, quote_ttl_s=60.0)

    async def scenario() -> tuple[object, object]:
        await b.fund({"USDT": Decimal("10000")})
        await b.fetch_ticker("BTC/USDT")  # the bot sizes its order on this quote
        prices.quote("61000.00", "61000.01")
        first = await b.create_order(req("buy", "market", "0.01", "ttl-1"))
        # That quote served one order: the next one asks again.
        second = await b.create_order(req("buy", "market", "0.01", "ttl-2"))
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first, ExchangeOrder)
    assert isinstance(second, ExchangeOrder)
    assert first.average_price == Decimal("60000.01")
    assert second.average_price == Decimal("61000.01")


def test_orders_sent_together_are_booked_in_one_transaction(setup: tuple[Settings, int]) -> None:
    # Three bots' brokers on their own accounts send at once: one batch, each its own answer;
    # the one without funds is refused alone.
    from cryptoorchestrator.platform.exchange.paper import PaperBookings

    settings, _ = setup
    with db.session_scope(settings) as s:
        user = s.scalars(select(User)).one()
        accounts = []
        for i in range(3):
            account = ExchangeAccount(
                user_id=user.id, name=f"p{i}", exchange="binance", mode="paper"
            )
            s.add(account)
            s.flush()
            accounts.append(account.id)
    prices = Prices()
    batches = PaperBookings(settings)  # the bot process's, shared by its brokers
    brokers = [
        PaperBroker(settings, a, prices, clock=lambda: NOW, bookings=batches)  # type: ignore[arg-type]
        for a in accounts
    ]
    before = batches.batches

    async def scenario() -> list[object]:
        for b in brokers[:2]:
            await b.fund({"USDT": Decimal("1000")})
        return list(
            await asyncio.gather(
                *(
                    b.create_order(req("buy", "market", "0.01", f"c{i}"))
                    for i, b in enumerate(brokers)
                )
            )
        )

    first, second, broke = asyncio.run(scenario())
    assert batches.batches == before + 1
    for order in (first, second):
        assert isinstance(order, ExchangeOrder)
        assert order.status is OrderStatus.FILLED
    assert isinstance(broke, OrderRejected)
    assert broke.code == "insufficient_funds"
    balances = [asyncio.run(b.fetch_balances()) for b in brokers[:2]]
    spent = Decimal("0.01") * Decimal("60000.01")
    assert [x["USDT"].free for x in balances] == [Decimal(1000) - spent] * 2
    with db.session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 2


def _book_together_and_alone(
    setup: tuple[Settings, int], requests: list[OrderRequest], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[object], list[object], list[dict[str, object]]]:
    """Book ``requests`` on two fresh accounts: all at once (one batch) and one by one."""
    settings, _ = setup
    with db.session_scope(settings) as s:
        user = s.scalars(select(User)).one()
        ids = []
        for name in ("together", "alone"):
            account = ExchangeAccount(user_id=user.id, name=name, exchange="binance", mode="paper")
            s.add(account)
            s.flush()
            ids.append(account.id)
    prices = Prices()
    together, alone = (PaperBroker(settings, a, prices, clock=lambda: NOW) for a in ids)  # type: ignore[arg-type]
    alone_calls = []
    original = PaperBroker._run_db

    def counted(self: PaperBroker, fn: object) -> object:
        alone_calls.append(self.account_id)
        return original(self, fn)  # type: ignore[arg-type]

    async def scenario() -> tuple[list[object], list[object]]:
        for b in (together, alone):
            await b.fund({"USDT": Decimal("1000")})
        monkeypatch.setattr(PaperBroker, "_run_db", counted)
        batches = together.bookings
        before = batches.batches
        first = list(await asyncio.gather(*(together.create_order(r) for r in requests)))
        assert batches.batches == before + 1
        assert alone_calls == []  # booked by the batch, not by the one-by-one fallback
        second = [await alone.create_order(r) for r in requests]
        monkeypatch.setattr(PaperBroker, "_run_db", original)
        return first, second

    first, second = asyncio.run(scenario())
    books = []
    for b in (together, alone):
        balances = asyncio.run(b.fetch_balances())
        with db.session_scope(settings) as s:
            orders = s.scalars(
                select(Order).where(Order.exchange == b.exchange_name).order_by(Order.id)
            ).all()
            trades = s.scalars(
                select(Trade)
                .join(Order, Trade.order_id == Order.id)
                .where(Order.exchange == b.exchange_name)
                .order_by(Trade.id)
            ).all()
            books.append(
                {
                    "balances": {k: (v.free, v.locked) for k, v in balances.items()},
                    "orders": [
                        (
                            o.client_order_id.split(":")[-1],
                            o.status,
                            o.filled,
                            o.average_price,
                            o.exchange_order_id == str(o.id),
                        )
                        for o in orders
                    ],
                    "trades": [
                        (
                            t.price,
                            t.amount,
                            t.fee,
                            t.fee_currency,
                            t.exchange_trade_id.endswith("-1"),
                        )
                        for t in trades
                    ],
                }
            )
    return first, second, books


def test_a_batch_books_exactly_what_one_by_one_booking_does(
    setup: tuple[Settings, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One account, orders that depend on each other: the buys spend the USDT, the third buy
    # finds too little left, the sell spends BTC the first buy created (a new balance row), a
    # resting limit locks funds, and a client order id sent twice gives one order.
    requests = [
        req("buy", "market", "0.008", "a"),
        req("buy", "market", "0.008", "b"),
        req("buy", "market", "0.008", "c"),
        req("sell", "market", "0.005", "d"),
        req("buy", "limit", "0.001", "e", price="50000"),
        req("buy", "market", "0.008", "a"),
    ]
    first, second, (together, alone) = _book_together_and_alone(setup, requests, monkeypatch)
    assert together == alone
    kinds = [type(x).__name__ for x in first]
    assert kinds == [type(x).__name__ for x in second]
    assert kinds == [
        "ExchangeOrder",
        "ExchangeOrder",
        "OrderRejected",
        "ExchangeOrder",
        "ExchangeOrder",
        "ExchangeOrder",
    ]
    assert first[0].order_id == first[5].order_id  # type: ignore[union-attr]
    for a, b in zip(first, second, strict=True):
        if isinstance(a, ExchangeOrder):
            assert isinstance(b, ExchangeOrder)
            assert (a.status, a.filled, a.average_price, a.cost, a.fee) == (
                b.status,
                b.filled,
                b.average_price,
                b.cost,
                b.fee,
            )
            assert [f.trade_id == f"{a.order_id}-1" for f in a.fills] == [True] * len(a.fills)
    assert together["balances"]["USDT"][1] == Decimal("50")  # the resting limit's lock
    assert len(together["orders"]) == 4


def _intent(settings: Settings, cid: str) -> None:
    """A bot's order intent row, as the trading loop stores it before risk approval."""
    with db.session_scope(settings) as s:
        s.add(
            Order(
                bot_id=None,
                client_order_id=cid,
                exchange="paper",
                symbol="BTC/USDT",
                side="buy",
                type="market",
                amount=Decimal("0.01"),
                filled=Decimal(0),
                status=OrderStatus.INTENT.value,
            )
        )


def _row(settings: Settings, cid: str) -> tuple[str, str | None, datetime | None]:
    with db.session_scope(settings) as s:
        order = s.scalars(select(Order).where(Order.client_order_id == cid)).one()
        return order.status, order.status_reason, order.submitted_at


@pytest.mark.parametrize("together", [False, True])
def test_the_submitted_mark_is_written_with_the_booking(
    setup: tuple[Settings, int], together: bool
) -> None:
    """Booked and marked in one transaction; an intent that is not stored books nothing."""
    settings, account_id = setup
    prices = Prices()
    b = broker(setup, prices)
    _intent(settings, "m1")
    if together:
        _intent(settings, "m2")

    async def scenario() -> list[object]:
        await b.fund({"USDT": Decimal("1000")})
        cids = ["m1", "m2", "ghost"] if together else ["m1", "ghost"]
        return list(
            await asyncio.gather(
                *(
                    b.create_order(req("buy", "market", "0.001", c), mark_submitted_as="signal")
                    for c in cids
                ),
                return_exceptions=True,
            )
        )

    answers = asyncio.run(scenario())
    ghost = answers[-1]
    assert isinstance(ghost, LookupError)
    assert "ghost" in str(ghost)
    for order in answers[:-1]:
        assert isinstance(order, ExchangeOrder)
        assert order.status is OrderStatus.FILLED
    status, reason, submitted_at = _row(settings, "m1")
    assert (status, reason) == (OrderStatus.SUBMITTED.value, "signal")
    assert submitted_at is not None
    assert submitted_at.replace(tzinfo=UTC) == NOW
    with db.session_scope(settings) as s:
        booked = set(
            s.scalars(select(Order.client_order_id).where(Order.exchange.like("paper:%"))).all()
        )
    # The ghost's booking rolled back with its failed mark; the others stand.
    assert booked == {f"paper:{account_id}:{c}" for c in (["m1", "m2"] if together else ["m1"])}
    spent = Decimal("0.001") * Decimal("60000.01") * len(booked)
    assert asyncio.run(b.fetch_balances())["USDT"].free == Decimal(1000) - spent


def test_fees_in_quote_are_charged_as_the_backtest_charges_them(
    setup: tuple[Settings, int],
) -> None:
    """``fees_in_quote``: price x amount x rate in quote on both sides; a buy needs cost + fee."""
    prices = Prices()
    b = broker(setup, prices, fees_in_quote=True)
    Balances = dict[str, Balance]

    async def scenario() -> tuple[object, object, Balances, object, Balances]:
        await b.fund({"USDT": Decimal("1000")})
        too_big = await b.create_order(req("buy", "market", "0.01666", "big"))  # 999.6 + fee
        buy = await b.create_order(req("buy", "market", "0.01", "buy-1"))
        after_buy = await b.fetch_balances()
        sell = await b.create_order(req("sell", "market", "0.01", "sell-1"))
        return too_big, buy, after_buy, sell, await b.fetch_balances()

    too_big, buy, after_buy, sell, final = asyncio.run(scenario())
    assert isinstance(too_big, OrderRejected)
    assert too_big.code == "insufficient_funds"
    assert isinstance(buy, ExchangeOrder)
    cost = Decimal("0.01") * Decimal("60000.01")
    assert (buy.fee, buy.fee_currency) == (Decimal("0.60000010"), "USDT")
    assert after_buy["BTC"].free == Decimal("0.01")  # the whole amount: no fee in base
    assert after_buy["USDT"].free == Decimal("1000") - cost - Decimal("0.60000010")
    assert isinstance(sell, ExchangeOrder)
    proceeds = Decimal("0.01") * Decimal("59999.99")
    assert (sell.fee, sell.fee_currency) == (Decimal("0.59999990"), "USDT")
    assert final["USDT"].free == after_buy["USDT"].free + proceeds - Decimal("0.59999990")
    assert "BTC" not in final  # nothing left: a zero balance is not listed


class FormingCandle(Prices):
    """Market data whose candle forming now opened at 60123.45 and trades at 60200.10."""

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        return [Candle(3_600_000, 60123.45, 60250.0, 60100.0, 60200.10, 5.0)][-(limit or 1) :]


def test_quote_candle_quotes_the_forming_candle_without_spread(
    setup: tuple[Settings, int],
) -> None:
    """``quote_candle``: the forming candle's last price is bid, ask and fill, both sides."""
    b = broker(setup, FormingCandle(), quote_candle="1h")

    async def scenario() -> tuple[object, ...]:
        await b.fund({"USDT": Decimal("10000")})
        ticker = await b.fetch_ticker("BTC/USDT")
        buy = await b.create_order(req("buy", "market", "0.01", "buy-1"))
        sell = await b.create_order(req("sell", "market", "0.005", "sell-1"))
        return ticker, buy, sell

    ticker, buy, sell = asyncio.run(scenario())
    price = Decimal("60200.1")
    assert isinstance(ticker, Ticker)
    assert (ticker.bid, ticker.ask, ticker.last, ticker.timestamp_ms) == (
        price,
        price,
        price,
        3_600_000,
    )
    assert isinstance(buy, ExchangeOrder)
    assert isinstance(sell, ExchangeOrder)
    assert buy.average_price == sell.average_price == price


# ------------------------------------------------------------------------- stop-loss orders


def stop_req(amount: str, cid: str, stop: str, side: str = "sell") -> OrderRequest:
    return OrderRequest(
        "BTC/USDT",
        OrderSide(side),
        OrderType.STOP_LOSS,
        Decimal(amount),
        cid,
        stop_price=Decimal(stop),
    )


def test_stop_loss_rests_locked_fills_at_its_stop_and_survives_a_restart(
    setup: tuple[Settings, int],
) -> None:
    """On quotes: resting with its BTC locked, found again by a new broker (a restart), filled
    whole at the quote that reached its stop (a market order then); one through the quote is
    refused."""
    prices = Prices()
    b = broker(setup, prices)

    async def scenario() -> tuple[object, ...]:
        await b.fund({"BTC": Decimal("1"), "USDT": Decimal(0)})
        placed = await b.create_order(stop_req("0.5", "stop-1", "59000"))
        refused = await b.create_order(stop_req("0.1", "stop-2", "60000"))
        balances = await b.fetch_balances()
        again = broker(setup, prices)
        found = await again.fetch_order("BTC/USDT", client_order_id="stop-1")
        prices.quote("59500", "59500.02")
        held = await again.fetch_order("BTC/USDT", client_order_id="stop-1")
        prices.quote("58000", "58000.02")
        filled = await again.fetch_order("BTC/USDT", client_order_id="stop-1")
        return placed, refused, balances, found, held, filled, await again.fetch_balances()

    placed, refused, balances, found, held, filled, after = asyncio.run(scenario())
    assert isinstance(placed, ExchangeOrder)
    assert placed.status is OrderStatus.OPEN
    assert (placed.type, placed.stop_price, placed.price) == (
        OrderType.STOP_LOSS,
        Decimal("59000"),
        None,
    )
    assert isinstance(refused, OrderRejected)
    assert refused.code == "would_trigger"
    assert balances["BTC"] == Balance("BTC", Decimal("0.5"), Decimal("0.5"))  # type: ignore[index]
    assert isinstance(found, ExchangeOrder)
    assert found.stop_price == Decimal("59000")
    assert isinstance(held, ExchangeOrder)
    assert held.status is OrderStatus.OPEN
    assert isinstance(filled, ExchangeOrder)
    assert filled.status is OrderStatus.FILLED
    assert filled.average_price == Decimal("58000")
    assert filled.fills[0].amount == Decimal("0.5")
    fee = Decimal("29")  # 0.1 % of 29,000 USDT
    assert after["BTC"] == Balance("BTC", Decimal("0.5"), Decimal(0))  # type: ignore[index]
    assert after["USDT"] == Balance("USDT", Decimal(29000) - fee, Decimal(0))  # type: ignore[index]


def test_cancelled_stop_releases_its_funds_and_never_fills(setup: tuple[Settings, int]) -> None:
    prices = Prices()
    b = broker(setup, prices)

    async def scenario() -> tuple[object, ...]:
        await b.fund({"BTC": Decimal("1")})
        await b.create_order(stop_req("0.5", "stop-1", "59000"))
        cancelled = await b.cancel_order("BTC/USDT", client_order_id="stop-1")
        prices.quote("58000", "58000.02")
        return cancelled, await b.fetch_order("BTC/USDT", client_order_id="stop-1")

    cancelled, later = asyncio.run(scenario())
    assert isinstance(cancelled, ExchangeOrder)
    assert cancelled.status is OrderStatus.CANCELED
    assert isinstance(later, ExchangeOrder)
    assert later.status is OrderStatus.CANCELED
    assert later.fills == ()


class ScriptedCandles(Prices):
    """Hourly candles revealed up to a clock the test moves (the forming one so far)."""

    def __init__(self, candles: list[Candle]) -> None:
        super().__init__()
        self.candles = candles
        self.now_ms = candles[0].timestamp_ms

    def clock(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms / 1000, UTC)

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        seen = [c for c in self.candles if c.timestamp_ms <= self.now_ms]
        if since_ms is not None:
            seen = [c for c in seen if c.timestamp_ms >= since_ms]
            return seen[: limit or None]
        return seen[-(limit or 1) :]


HOUR_MS = 3_600_000


@pytest.mark.parametrize(
    ("second", "price", "bar"),
    [
        # the candle after the order's reaches the stop: at the stop, stamped in that candle
        (Candle(2 * HOUR_MS, 100.5, 101.0, 97.0, 99.0, 1.0), Decimal("98.5"), 2),
        # it opens through the stop (a gap): at its open
        (Candle(2 * HOUR_MS, 97.25, 99.0, 96.0, 98.0, 1.0), Decimal("97.25"), 2),
        # it never reaches the stop: still resting
        (Candle(2 * HOUR_MS, 100.5, 101.0, 99.0, 100.0, 1.0), None, None),
    ],
)
def test_stop_on_candles_follows_the_kernels_rule(
    setup: tuple[Settings, int], second: Candle, price: Decimal | None, bar: int | None
) -> None:
    """``quote_candle``: a stop placed inside candle 1 (whose low, before the order, was below
    the stop) triggers by the kernel's rule on candle 2 only."""
    first = Candle(HOUR_MS, 99.0, 101.0, 95.0, 100.0, 1.0)
    prices = ScriptedCandles([first, second])
    settings, account_id = setup
    b = PaperBroker(settings, account_id, prices, clock=prices.clock, quote_candle="1h")

    async def scenario() -> object:
        await b.fund({"BTC": Decimal("1")})
        prices.now_ms = HOUR_MS + HOUR_MS // 2
        placed = await b.create_order(stop_req("0.5", "stop-1", "98.5"))
        assert isinstance(placed, ExchangeOrder)
        assert placed.status is OrderStatus.OPEN
        assert (await b.fetch_order("BTC/USDT", client_order_id="stop-1")).status is (  # type: ignore[union-attr]
            OrderStatus.OPEN
        )
        prices.now_ms = 3 * HOUR_MS - 1
        return await b.fetch_order("BTC/USDT", client_order_id="stop-1")

    order = asyncio.run(scenario())
    assert isinstance(order, ExchangeOrder)
    if price is None:
        assert order.status is OrderStatus.OPEN
        assert order.fills == ()
        return
    assert order.status is OrderStatus.FILLED
    assert bar is not None
    assert (order.fills[0].price, order.fills[0].timestamp_ms) == (price, bar * HOUR_MS)


def test_fills_are_stamped_with_the_markets_time_not_the_machines(
    setup: tuple[Settings, int],
) -> None:
    # The demo's simulator replays 2021 while this machine's clock says otherwise: a trade's
    # time must be the quote's (as the backtest stamps a fill with its bar), so the dashboard's
    # fill markers land on the candles they traded on.
    market_time = datetime(2021, 3, 8, 14, tzinfo=UTC)
    prices = Prices()
    prices.ticker = Ticker(
        "BTC/USDT",
        last=Decimal("50000"),
        bid=Decimal("50000"),
        ask=Decimal("50000"),
        timestamp_ms=int(market_time.timestamp() * 1000),
    )
    b = broker(setup, prices)

    async def scenario() -> None:
        await b.fund({"USDT": Decimal("10000")})
        await b.create_order(req("buy", "market", "0.01", "mkt-1"))
        await b.create_order(req("sell", "limit", "0.005", "lmt-1", "50100"))
        prices.ticker = Ticker(
            "BTC/USDT",
            last=Decimal("50200"),
            bid=Decimal("50200"),
            ask=Decimal("50200"),
            timestamp_ms=int(market_time.timestamp() * 1000) + 3_600_000,
        )
        await b.fetch_open_orders("BTC/USDT")  # the resting limit fills at this quote

    asyncio.run(scenario())
    settings, _ = setup
    with db.session_scope(settings) as s:
        times = [
            t.replace(tzinfo=UTC) for t in s.scalars(select(Trade.timestamp).order_by(Trade.id))
        ]
    assert times == [market_time, market_time + timedelta(hours=1)]
    assert NOW not in times  # the broker's own clock stamps no fill
