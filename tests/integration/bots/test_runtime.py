"""The bot runtime against ccxt's real binance class and the exchange simulator.

Crashes are injected at every point of an order's life (before submit, after the exchange
accepted it but before the answer was stored, between fills); a fresh runtime then reconciles.
Each case must end with exactly one order at the exchange and every fill stored once.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from cryptoorchestrator.platform.bots.process import BotProcess
from cryptoorchestrator.platform.bots.runtime import (
    BotRuntime,
    BotSettings,
    Ledger,
    SharedCandles,
    decide,
)
from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
from cryptoorchestrator.platform.exchange.execution import Fill
from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.model.clock import TestClock
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision, RiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import EquitySnapshot, Order, Position, Trade

HOUR = 3_600_000


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, nothing is cleaned up."""


class Scripted:
    """Signals from a script: buy on the n-th decision, sell on the m-th."""

    def __init__(self, buy_at: int, sell_at: int) -> None:
        self.calls = 0
        self.buy_at, self.sell_at = buy_at, sell_at

    def __call__(self, bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        self.calls += 1
        return self.calls == self.buy_at, self.calls == self.sell_at, False, False


def make_runtime(
    settings: Any,
    bot_id: int,
    sim: Any,
    signals: Any,
    manager: RiskManager | None = None,
    process: BotProcess | None = None,
) -> BotRuntime:
    client = CcxtExecutionClient.for_exchange(
        "binance",
        api_key=sim.api_key,
        secret=sim.api_secret,
        api_url=sim.base_url,
        account_id=f"test-{bot_id}-{id(signals)}",
        enable_rate_limit=False,
    )
    manager = manager or RiskManager(RiskLimits(max_orders_per_minute=1000), TestClock())
    manager.register_bot(
        bot_id, equity=Decimal(10_000), max_position_pct=Decimal(50), risk_per_trade_pct=Decimal(1)
    )

    async def gate(check: OrderCheck) -> RiskDecision:
        return manager.approve(check)

    cfg = BotSettings(
        bot_id=bot_id,
        symbol="BTC/USDT",
        timeframe="1h",
        exchange="binance",
        starting_balance=Decimal(10_000),
        max_position_pct=Decimal(50),
        risk_per_trade_pct=Decimal(1),
        window=100,
    )
    return BotRuntime(
        cfg, settings, client, signals, gate, process=process, poll_interval_s=0.01, settle_s=0.0
    )


async def step(rt: BotRuntime, sim: Any, n: int) -> None:
    for _ in range(n):
        sim.advance(HOUR)
        assert await rt.poll_once()


def exchange_orders(sim: Any) -> list[dict[str, Any]]:
    return [o for o in sim.orders() if o["clientOrderId"].startswith("co")]


def test_decide_mirrors_the_engine() -> None:
    assert decide(Decimal(0), True, False, False, False) == "buy"
    assert decide(Decimal(0), True, True, False, False) is None
    assert decide(Decimal(1), False, True, False, False) == "sell"
    assert decide(Decimal(1), False, False, True, False) == "sell"
    assert decide(Decimal(0), False, False, True, False) is None  # spot cannot short
    assert decide(Decimal(1), True, False, False, False) is None
    # an account that can short: the engine's _decide_nb with shorts
    assert decide(Decimal(0), False, False, True, False, shorts=True) == "short"
    assert decide(Decimal(1), False, False, True, False, shorts=True) == "sell+short"
    assert decide(Decimal(-1), True, False, False, False, shorts=True) == "cover+buy"
    assert decide(Decimal(-1), False, False, False, True, shorts=True) == "cover"
    assert decide(Decimal(-1), False, False, True, False, shorts=True) is None
    assert decide(Decimal(1), False, True, False, False, shorts=True) == "sell"
    assert decide(Decimal(0), True, False, True, False, shorts=True) is None


def test_signed_ledger_books_a_short_exactly() -> None:
    """On a margin account a sale opens a short (proceeds in cash, negative basis) and the
    buy that covers it realises proceeds less what it cost, fees in quote."""
    book = Ledger(cash=Decimal(1000), margin=True)

    def fill(side: OrderSide, price: str, amount: str, fee: str, ms: int) -> Fill:
        return Fill(str(ms), "o", "BTC/USDT", side, Decimal(price), Decimal(amount),
                    Decimal(fee), "USDT", ms)  # fmt: skip

    assert book.apply(fill(OrderSide.SELL, "100", "2", "0.2", 1), "BTC", "USDT") == 0
    assert (book.amount, book.cash) == (Decimal(-2), Decimal("1199.8"))
    assert (book.entry_open, book.entry_price, book.entry_ms) == (True, 100, 1)
    assert book.equity(Decimal(90)) == Decimal("1019.8")
    pnl = book.apply(fill(OrderSide.BUY, "90", "2", "0.18", 2), "BTC", "USDT")
    assert pnl == Decimal("199.8") - Decimal("180.18")
    assert (book.amount, book.cost_basis, book.entry_open) == (0, 0, False)
    assert book.cash == Decimal(1000) + pnl == book.equity(Decimal(1))
    assert book.fees_paid == Decimal("0.38")


def test_a_spot_account_refuses_a_short_strategy(settings: Any) -> None:
    """A strategy that shorts cannot run on an account that cannot short: the error names
    the strategy's ``short`` field."""
    from cryptoorchestrator.platform.errors import InvalidInputError

    rt = offline_runtime(settings, allow_short=True)
    with pytest.raises(InvalidInputError, match="spot account") as err:
        asyncio.run(rt.prepare())
    assert err.value.field == "short"


def test_ledger_is_exact_with_base_and_quote_fees() -> None:
    book = Ledger(cash=Decimal(1000))
    book.apply(
        Fill(
            "1",
            "o",
            "BTC/USDT",
            OrderSide.BUY,
            Decimal(100),
            Decimal(2),
            Decimal("0.002"),
            "BTC",
            0,
        ),
        "BTC",
        "USDT",
    )
    assert book.cash == Decimal(800)
    assert book.amount == Decimal("1.998")
    pnl = book.apply(
        Fill(
            "2",
            "o2",
            "BTC/USDT",
            OrderSide.SELL,
            Decimal(110),
            Decimal("1.998"),
            Decimal("0.21978"),
            "USDT",
            0,
        ),
        "BTC",
        "USDT",
    )
    assert book.amount == 0
    assert book.cash == Decimal(800) + Decimal("219.78") - Decimal("0.21978")
    # the buy's fee was paid in BTC: the basis is the 200 USDT spent for 1.998 BTC
    assert pnl == Decimal("219.78") - Decimal("0.21978") - Decimal(200)
    assert book.realized_pnl == pnl
    assert book.fees_paid == Decimal("0.2") + Decimal("0.21978")


def test_round_trip_books_match_the_exchange(sim: Any, bot_db: Any) -> None:
    settings, bot_id = bot_db

    async def scenario() -> BotRuntime:
        rt = make_runtime(settings, bot_id, sim, Scripted(buy_at=1, sell_at=4))
        await rt.prepare()
        await step(rt, sim, 5)
        await rt.client.close()
        return rt

    rt = asyncio.run(scenario())
    orders = exchange_orders(sim)
    assert [o["side"] for o in orders] == ["BUY", "SELL"]
    assert all(o["status"] == "FILLED" for o in orders)
    with db.session_scope(settings) as session:
        stored = session.scalars(select(Order).order_by(Order.id)).all()
        assert [o.status for o in stored] == ["filled", "filled"]
        assert [o.exchange_order_id for o in stored] == [str(o["orderId"]) for o in orders]
        trades = session.scalars(select(Trade)).all()
        assert sum(t.amount for t in trades if t.side == "buy") == Decimal(orders[0]["executedQty"])
        assert session.query(EquitySnapshot).count() == 5
        pos = session.scalars(select(Position)).one()
        assert pos.amount == rt.ledger.amount
    # The bot's books equal the exchange's balances, to the last satoshi and cent.
    balances = sim.balances()
    assert rt.ledger.cash == sum(balances["USDT"])
    assert rt.ledger.amount == sum(balances.get("BTC", (Decimal(0), Decimal(0))))
    # The entry used half the equity (maxPositionSize 50 %), as the backtest sizes it.
    buy = Decimal(orders[0]["cummulativeQuoteQty"])
    assert Decimal(4900) < buy <= Decimal(5000)


@pytest.mark.parametrize("sim", ["0.25"], indirect=True)  # market orders fill in 4 trades
@pytest.mark.parametrize("point", ["before_submit", "after_accept", "between_fills"])
def test_crash_at_any_point_leaves_one_order_and_every_fill(
    point: str, sim: Any, bot_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, bot_id = bot_db

    async def first_life() -> None:
        rt = make_runtime(settings, bot_id, sim, Scripted(buy_at=1, sell_at=99))
        await rt.prepare()
        real_create = rt.client.create_order
        real_record = rt.record_answer

        async def crashing_create(request: Any) -> Any:
            if point == "before_submit":
                raise Crash
            await real_create(request)
            raise Crash  # accepted by the exchange, answer never stored

        def crashing_record(order: Any, fills: list[Fill]) -> list[Fill]:
            applied = real_record(order, fills[:1])
            if len(fills) > 1 or order.filled > sum(f.amount for f in fills[:1]):
                raise Crash
            return applied

        if point == "between_fills":
            monkeypatch.setattr(rt, "record_answer", crashing_record)
        else:
            monkeypatch.setattr(rt.client, "create_order", crashing_create)
        sim.advance(HOUR)
        try:
            with pytest.raises(Crash):
                await rt.poll_once()
        finally:
            await rt.client.close()

    async def second_life() -> BotRuntime:
        rt = make_runtime(settings, bot_id, sim, Scripted(buy_at=1, sell_at=99))
        await rt.prepare()
        await rt.poll_once()  # the same candle: resubmits an unsent intent under the same id
        sim.advance(HOUR)
        await rt.poll_once()
        await rt.client.close()
        return rt

    asyncio.run(first_life())
    rt = asyncio.run(second_life())
    orders = exchange_orders(sim)
    assert len(orders) == 1, orders
    cid = orders[0]["clientOrderId"]
    with db.session_scope(settings) as session:
        row = session.scalars(select(Order).where(Order.client_order_id == cid)).one()
        assert row.status == "filled"
        trades = session.scalars(select(Trade).where(Trade.order_id == row.id)).all()
        ids = [t.exchange_trade_id for t in trades]
        assert len(ids) == len(set(ids))
        assert sum(t.amount for t in trades) == Decimal(orders[0]["executedQty"])
        assert len(trades) >= 4  # a 0.25 ratio: four chunks and any remainder
    # The rebuilt books equal the exchange's balances exactly.
    balances = sim.balances()
    assert rt.ledger.cash == sum(balances["USDT"])
    assert rt.ledger.amount == sum(balances["BTC"])


def test_shared_candles_one_request_for_bots_polling_together() -> None:
    shared = SharedCandles()
    calls = 0

    async def fetch() -> list[Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return [calls]

    async def both() -> list[list[Any]]:
        return list(await asyncio.gather(*(shared.get(("k",), 10.0, fetch) for _ in range(5))))

    assert asyncio.run(both()) == [[1]] * 5
    assert calls == 1
    assert asyncio.run(shared.get(("k",), 0.0, fetch)) == [2]  # too old: asks again


def test_shared_candles_do_not_keep_a_failure() -> None:
    shared = SharedCandles()

    async def fail() -> list[Any]:
        raise RuntimeError("down")

    async def ok() -> list[Any]:
        return [1]

    with pytest.raises(RuntimeError):
        asyncio.run(shared.get(("k",), 10.0, fail))
    assert asyncio.run(shared.get(("k",), 10.0, ok)) == [1]


class _MarginAccount:
    """Stands for an execution client of an account that can short (only the capability)."""

    supports_short = True


def offline_runtime(
    settings: Any,
    *,
    clock: Any = None,
    poll_interval_s: float = 1.0,
    client: Any = None,
    **config: Any,
) -> BotRuntime:
    """A runtime with no exchange and a risk gate that denies: for its arithmetic alone."""
    defaults: dict[str, Any] = {
        "bot_id": 1,
        "symbol": "BTC/USDT",
        "timeframe": "1h",
        "exchange": "binance",
        "starting_balance": Decimal(1000),
        "max_position_pct": Decimal(10),
        "risk_per_trade_pct": Decimal(1),
    }

    async def deny(check: OrderCheck) -> RiskDecision:
        return RiskDecision.deny("test", "unused")

    return BotRuntime(
        BotSettings(**{**defaults, **config}),
        settings,
        client,
        Scripted(0, 0),
        deny,
        clock=clock,
        poll_interval_s=poll_interval_s,
    )


@pytest.mark.parametrize("stop", [None, Decimal(2)])
def test_entry_leaves_room_for_dust_held(stop: Decimal | None, settings: Any) -> None:
    # A sale rounded to the lot step leaves dust; the next entry must keep the position
    # (dust included) within maxPositionSize, or the risk actor denies it.
    rt = offline_runtime(settings, risk_per_trade_pct=Decimal(5), stop_loss_pct=stop)
    cfg = rt.config
    price = Decimal(40_000)
    flat = rt._entry_amount(price)  # noqa: SLF001
    # Flat: the engine's sizing (without a stop the fee comes out of the cap, with one the cap
    # is on the position alone).
    expected = Decimal(100) if stop else Decimal(100) / Decimal("1.001")
    assert abs(flat * price - expected) < Decimal("1e-20")
    rt.ledger.amount = Decimal("0.000009")  # 0.36 USDT of dust
    rt.ledger.cash -= rt.ledger.amount * price
    amount = rt._entry_amount(price)  # noqa: SLF001
    cap = rt.ledger.equity(price) * cfg.max_position_pct / 100
    assert amount * price + rt.ledger.amount * price <= cap
    assert amount < flat


@pytest.mark.parametrize("stop", [None, Decimal(2)])
def test_a_short_is_sized_as_the_kernel_sizes_it(stop: Decimal | None, settings: Any) -> None:
    """On a margin account a short entry commits the margin rule's room (``entry_room``, fee
    included), the kernel's quantity; the risk manager's cap approves it."""
    from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
    from cryptoorchestrator.platform.risk import margin

    rt = offline_runtime(
        settings,
        client=_MarginAccount(),
        max_position_pct=Decimal(100),
        stop_loss_pct=stop,
        risk_per_trade_pct=Decimal(5),
        allow_short=True,
    )
    price = Decimal(100)
    amount = rt._entry_amount(price, -1)  # noqa: SLF001
    room = margin.entry_room(Decimal(1000), Decimal(0), Decimal(1), Decimal("0.001"))
    # fraction sizing: all the room; risk sizing: 5 % of equity at a 2 % stop, within it
    expected = room if stop is None else min(room, Decimal(1000) * 5 / 2)
    assert amount * price == expected
    bars = np.array([100.0, 100.0])
    sized = simulate(
        bars,
        bars,
        bars,
        bars,
        None,
        None,
        np.array([True, False]),
        config=SimConfig(
            init_cash=1000.0,
            fee_bps=10.0,
            fill="close",
            size_mode="risk" if stop else "fraction",
            size=0.05 if stop else 1.0,
            stop_loss=0.02 if stop else None,
        ),
    )
    assert float(amount) == pytest.approx(sized.orders[0, 3], rel=1e-15)
    manager = RiskManager(RiskLimits(max_orders_per_minute=1000), TestClock())
    manager.register_bot(
        1, equity=Decimal(1000), max_position_pct=Decimal(100), risk_per_trade_pct=Decimal(5)
    )
    check = OrderCheck(1, "co1-0-H", "BTC/USDT", OrderSide.SELL, amount, price)
    assert manager.approve(check).approved


def test_paper_bots_of_a_loop_share_one_market_data_client(sim: Any, bot_db: Any) -> None:
    # Ten paper bots of a group asking for the ticker together: one client, one request.
    from cryptoorchestrator.platform.bots.clients import SharedMarketData, execution_client_for
    from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount

    settings, bot_id = bot_db
    # The account points at the simulator on loopback: the operator allows its host.
    host = sim.base_url.split("://", 1)[1].rstrip("/")
    settings = settings.model_copy(update={"allowed_api_hosts": [host]})
    with db.session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        assert bot is not None
        account = ExchangeAccount(
            user_id=bot.user_id, name="sim", exchange="binance", mode="paper", api_url=sim.base_url
        )
        session.add(account)
        session.flush()
        bot.exchange_account_id = account.id

    async def main() -> tuple[int, int]:
        brokers = [(await execution_client_for(settings, bot_id))[0] for _ in range(3)]
        shared = {id(b.market_data) for b in brokers}  # type: ignore[attr-defined]
        assert len(shared) == 1
        assert isinstance(brokers[0].market_data, SharedMarketData)  # type: ignore[attr-defined]

        def ticker_requests() -> int:
            return sum(n for path, n in sim.stats.items() if "/ticker" in path)

        before = ticker_requests()
        tickers = await asyncio.gather(*(b.fetch_ticker("BTC/USDT") for b in brokers))
        assert len({t.bid for t in tickers}) == 1
        asked = ticker_requests() - before
        for broker in brokers:
            await broker.close()
        # The last close closed the client; a new broker on this loop gets a new one.
        again = (await execution_client_for(settings, bot_id))[0]
        fresh = again.market_data is not brokers[0].market_data  # type: ignore[attr-defined]
        await again.close()
        return asked, int(fresh)

    assert asyncio.run(main()) == (1, 1)


def test_the_bot_sleeps_until_the_next_candle_can_close(settings: Any) -> None:
    clock = TestClock(start_ms=10 * HOUR)
    rt = offline_runtime(settings, clock=clock, poll_interval_s=1.0)
    assert rt.next_poll_delay_s() == pytest.approx(1.0)  # nothing seen yet: the poll grid
    rt.state.last_candle_ms = 9 * HOUR  # the 09:00 candle closed at 10:00; 10:00 closes at 11:00
    clock.advance(60_000)
    assert rt.next_poll_delay_s() == pytest.approx(59 * 60)
    rt._unconfirmed = True  # noqa: SLF001 (an order to reconcile: keep polling)
    assert rt.next_poll_delay_s() == pytest.approx(1.0)
    rt._unconfirmed = False  # noqa: SLF001
    clock.set(11 * HOUR + 250)  # the close passed: poll on the grid until the candle shows
    assert rt.next_poll_delay_s() == pytest.approx(0.75)


@pytest.mark.parametrize("sim", ["0.25"], indirect=True)  # each order fills in 4+ trades
@pytest.mark.parametrize("shared_fails", [False, True])
def test_bots_of_a_loop_record_their_fills_together(
    shared_fails: bool, sim: Any, bot_db: Any, more_bots: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two bots act on one candle: their answers are recorded in one transaction, and the
    # books and rows are those each would have written alone.  Should that transaction fail,
    # every bot's books are put back and each answer is recorded alone.
    from cryptoorchestrator.platform.bots import records

    settings, _ = bot_db
    ids = more_bots(2)  # two halves of the one simulator account
    real_rows = records._record_rows
    shared_calls: list[int] = []

    def rows(conn: Any, items: list[Any]) -> Any:
        if len(items) > 1:
            shared_calls.append(len(items))
            if shared_fails:
                real_rows(conn, items)  # books moved, then the transaction fails
                raise RuntimeError("lost connection")
        return real_rows(conn, items)

    monkeypatch.setattr(records, "_record_rows", rows)

    class Together:
        """The group's batch, made certain: both bots' answers go to one record_all call (a
        real group's coalescer joins the answers that arrive within a few loop iterations, and
        these two bots' answers, each on its own HTTP client, may arrive further apart)."""

        def __init__(self) -> None:
            self.waiting: list[tuple[Any, asyncio.Future[Any]]] = []

        async def __call__(self, item: Any) -> Any:
            future = asyncio.get_running_loop().create_future()
            self.waiting.append((item, future))
            if len(self.waiting) == len(ids):
                batch, self.waiting = self.waiting, []
                answers = records.record_all([i for i, _ in batch])
                for (_, f), answer in zip(batch, answers, strict=True):
                    if isinstance(answer, BaseException):
                        f.set_exception(answer)
                    else:
                        f.set_result(answer)
            return await future

    together = Together()
    process = BotProcess(settings)  # the group's process: its recordings are the batch above
    monkeypatch.setattr(process, "recordings", together)

    async def scenario() -> list[BotRuntime]:
        rts = [
            make_runtime(settings, b, sim, Scripted(buy_at=1, sell_at=3), process=process)
            for b in ids
        ]
        for rt in rts:
            await rt.prepare()
        for _ in range(3):
            sim.advance(HOUR)
            polls = asyncio.gather(*(rt.poll_once() for rt in rts))
            await asyncio.wait_for(polls, timeout=30)
        for rt in rts:
            await rt.client.close()
        return rts

    rts = asyncio.run(scenario())
    assert shared_calls == [2, 2]  # the buys, then the sells, each recorded as one batch
    with db.session_scope(settings) as session:
        for rt in rts:
            bot_id = rt.config.bot_id
            orders = session.scalars(
                select(Order).where(Order.bot_id == bot_id).order_by(Order.id)
            ).all()
            assert [o.status for o in orders] == ["filled", "filled"]
            for o in orders:
                trades = session.scalars(select(Trade).where(Trade.order_id == o.id)).all()
                assert len(trades) >= 4
                assert sum(t.amount for t in trades) == o.filled
            pos = session.scalars(select(Position).where(Position.bot_id == bot_id)).one()
            assert pos.amount == rt.ledger.amount  # dust below the lot step may stay
            assert pos.realized_pnl == rt.ledger.realized_pnl
    for rt in rts:
        # The books in memory equal the books rebuilt from the stored fills.
        again = make_runtime(settings, rt.config.bot_id, sim, Scripted(buy_at=0, sell_at=0))
        again._load_ledger()  # noqa: SLF001
        # (the entry's fill price and time, which stops are measured from, included)
        assert again.ledger == rt.ledger


def test_a_pushed_close_wakes_the_bot_long_before_its_next_poll(sim: Any, bot_db: Any) -> None:
    """The simulator's kline stream wakes a bot that would otherwise poll in 60 s."""
    from cryptoorchestrator.platform.exchange.candle_feed import CandleFeed

    settings, bot_id = bot_db

    async def scenario() -> tuple[int, int, float]:
        rt = make_runtime(settings, bot_id, sim, Scripted(buy_at=0, sell_at=0))
        rt.poll_interval_s = 60.0
        rt.feed = CandleFeed.acquire("binance", sim.base_url)
        await rt.prepare()
        running = asyncio.get_running_loop().create_task(rt.run())
        try:
            async with asyncio.timeout(30):
                while rt.state.last_candle_ms is None or not rt.feed.connected("BTC/USDT", "1h"):
                    await asyncio.sleep(0.01)
            first = rt.state.last_candle_ms
            await asyncio.sleep(0.1)  # the bot is waiting now: for a push, or 60 s
            closes = rt.feed.stats("BTC/USDT", "1h").closes
            await asyncio.to_thread(sim.advance, HOUR)
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(10):
                while rt.state.last_candle_ms == first:
                    await asyncio.sleep(0.005)
            woke_s = asyncio.get_running_loop().time() - started
            assert rt.feed.stats("BTC/USDT", "1h").closes > closes
            return first, rt.state.last_candle_ms, woke_s
        finally:
            rt.request_stop()
            await running
            await rt.close()

    first, second, woke_s = asyncio.run(scenario())
    assert second == first + HOUR
    assert woke_s < 10  # far inside the 60 s poll: only the push can have woken it


@pytest.mark.parametrize("sim", ["0.25"], indirect=True)  # the market order fills in 4 trades
def test_an_orders_fills_and_final_state_are_published_as_one_batch(sim: Any, bot_db: Any) -> None:
    from cryptoorchestrator.platform.batching import Coalescer

    settings, bot_id = bot_db
    batches: list[list[str]] = []

    async def publish_many(events: list[tuple[str, dict[str, Any]]]) -> list[None]:
        batches.append([kind for kind, _ in events])
        return [None] * len(events)

    async def scenario() -> None:
        sink = Coalescer(publish_many)

        async def publish(kind: str, payload: dict[str, Any]) -> None:
            await sink((kind, payload))

        rt = make_runtime(settings, bot_id, sim, Scripted(buy_at=1, sell_at=0))
        rt.events = publish
        await rt.prepare()
        await step(rt, sim, 1)
        await rt.client.close()

    asyncio.run(scenario())
    (batch,) = batches  # one order: one batch of events
    assert batch.count("fill") >= 4
    assert batch[-1] == "order"


def test_a_bots_fills_commit_with_their_notifications(sim: Any, bot_db: Any) -> None:
    # The bots record fills with batched Core inserts, which the ORM's flush hook never sees:
    # the recording itself enqueues them, in the fills' own transaction.
    from cryptoorchestrator.platform.crypto import SecretBox
    from cryptoorchestrator.platform.notify.channels import ChannelService
    from cryptoorchestrator.platform.notify.config import NotifySettings
    from cryptoorchestrator.platform.notify.outbox import install_outbox
    from cryptoorchestrator.platform.storage.models import Bot, Notification

    settings, bot_id = bot_db
    install_outbox()
    notify = NotifySettings(allowed_hosts=["127.0.0.1:9"])
    with db.session_scope(settings) as session:
        owner = session.get(Bot, bot_id).user_id  # type: ignore[union-attr]
        ChannelService(session, SecretBox("bot-test-secret-key-0123456789"), notify, owner).create(
            "hook", {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}
        )

    async def scenario() -> None:
        rt = make_runtime(settings, bot_id, sim, Scripted(buy_at=1, sell_at=4))
        await rt.prepare()
        await step(rt, sim, 5)
        await rt.client.close()

    asyncio.run(scenario())
    with db.session_scope(settings) as session:
        trade_ids = session.scalars(select(Trade.id).where(Trade.bot_id == bot_id)).all()
        keys = session.scalars(
            select(Notification.event_key).where(Notification.event_key.like("fill:%"))
        ).all()
    assert len(trade_ids) >= 2  # the buy and the sell
    assert sorted(keys) == sorted(f"fill:{i}" for i in trade_ids)
