"""The bot process: what the bots of one process share, and nothing shared beyond it."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from cryptoorchestrator.platform.bots import runtime
from cryptoorchestrator.platform.bots.ledger import BotSettings
from cryptoorchestrator.platform.bots.process import BotProcess, SharedCandles, send_orders
from cryptoorchestrator.platform.bots.runtime import BotRuntime
from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
from cryptoorchestrator.platform.exchange.execution import (
    Balance,
    Candle,
    ExchangeOrder,
    ExecutionClient,
    Fill,
    MarketInfo,
    OrderRejected,
    OrderRequest,
    Ticker,
)
from cryptoorchestrator.platform.exchange.paper import PaperBroker
from cryptoorchestrator.platform.model import OrderSide, OrderType
from cryptoorchestrator.platform.model.clock import LiveClock, TestClock
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision
from cryptoorchestrator.platform.settings import Settings


class Exchange:
    """A duck-typed client that answers every order with a refusal naming how it was sent."""

    def __init__(self) -> None:
        self.closed = False

    async def create_order(self, request: OrderRequest) -> OrderRejected:
        return OrderRejected(request.client_order_id, request.symbol, "plain", "create_order")

    async def create_marked_order(self, request: OrderRequest, reason: str) -> OrderRejected:
        return OrderRejected(request.client_order_id, request.symbol, "marked", reason)

    async def close(self) -> None:
        self.closed = True


class Spot(ExecutionClient):
    """An execution client that declares no capability (the interface's defaults)."""

    account_key = "spot:test"

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        return {}

    async def fetch_balances(self) -> dict[str, Balance]:
        return {}

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        return []

    async def fetch_ticker(self, symbol: str) -> Ticker:
        return Ticker(symbol=symbol, last=None, bid=None, ask=None, timestamp_ms=None)

    async def create_order(self, request: OrderRequest) -> ExchangeOrder | OrderRejected:
        return OrderRejected(request.client_order_id, request.symbol, "plain", "create_order")

    async def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> ExchangeOrder | None:
        return None

    async def fetch_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> ExchangeOrder | None:
        return None

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return []

    async def fetch_my_trades(
        self,
        symbol: str,
        since_ms: int | None = None,
        limit: int | None = None,
        *,
        order_id: str | None = None,
    ) -> list[Fill]:
        return []

    async def close(self) -> None:
        return None


def request(cid: str) -> OrderRequest:
    return OrderRequest("BTC/USDT", OrderSide.BUY, OrderType.MARKET, Decimal("0.01"), cid)


def make_bot(settings: Settings, client: Any, process: BotProcess | None = None) -> BotRuntime:
    config = BotSettings(
        bot_id=1,
        symbol="BTC/USDT",
        timeframe="1h",
        exchange="binance",
        starting_balance=Decimal(1000),
        max_position_pct=Decimal(10),
        risk_per_trade_pct=Decimal(1),
    )

    async def deny(check: OrderCheck) -> RiskDecision:
        return RiskDecision.deny("test", "unused")

    return BotRuntime(config, settings, client, lambda bars: (False,) * 4, deny, process=process)


# ----------------------------------------------------------------------------- BotProcess


def test_a_process_holds_its_settings_clock_and_batchers(settings: Settings) -> None:
    clock = TestClock(1_700_000_000_000)
    process = BotProcess(settings, clock=clock)
    assert process.settings is settings
    assert process.clock is clock
    assert process.writes.settings is settings
    assert process.writes.clock is clock  # submitted marks are stamped with the process's time
    assert process.bookings.settings is settings
    assert isinstance(process.candles, SharedCandles)
    assert not process.closed
    assert isinstance(BotProcess(settings).clock, LiveClock)


def test_for_settings_makes_a_new_process_each_time(settings: Settings) -> None:
    first, second = BotProcess.for_settings(settings), BotProcess.for_settings(settings)
    assert first is not second
    assert first.writes is not second.writes


def test_two_processes_in_one_interpreter_batch_apart(settings: Settings) -> None:
    # The point of having no module globals: orders sent at the same instant by the bots of two
    # processes (two tests, a replay beside a group) are two batches, one per process, while
    # the bots of one process send as one batch.
    one, other = BotProcess(settings), BotProcess(settings)
    assert one.writes is not other.writes
    assert one.submissions is not other.submissions
    assert one.recordings is not other.recordings
    assert one.bookings is not other.bookings
    assert one.candles is not other.candles
    exchange = Exchange()

    async def send() -> list[ExchangeOrder | OrderRejected]:
        return list(
            await asyncio.gather(
                one.submissions((exchange, request("a1"), None)),  # type: ignore[arg-type]
                one.submissions((exchange, request("a2"), None)),  # type: ignore[arg-type]
                other.submissions((exchange, request("b1"), None)),  # type: ignore[arg-type]
            )
        )

    answers = asyncio.run(send())
    assert [a.client_order_id for a in answers] == ["a1", "a2", "b1"]
    assert (one.submissions.batches, one.submissions.items) == (1, 2)
    assert (other.submissions.batches, other.submissions.items) == (1, 1)


def test_close_forgets_shared_requests_and_may_be_called_twice(settings: Settings) -> None:
    process = BotProcess(settings)
    calls: list[int] = []

    async def fetch() -> int:
        calls.append(len(calls))
        return len(calls)

    async def scenario() -> list[int]:
        first = await process.candles.get(("k",), 60.0, fetch)
        kept = await process.candles.get(("k",), 60.0, fetch)  # shared: not asked again
        await process.close()
        await process.close()
        again = await process.candles.get(("k",), 60.0, fetch)  # forgotten: asked again
        return [first, kept, again]

    assert asyncio.run(scenario()) == [1, 1, 2]
    assert process.closed


def test_a_bot_uses_its_process_and_leaves_it_open(settings: Settings) -> None:
    clock = TestClock()
    process = BotProcess(settings, clock=clock)
    exchange = Exchange()
    bot = make_bot(settings, exchange, process)
    assert bot.process is process
    assert bot.writes is process.writes
    assert bot.clock is clock
    asyncio.run(bot.close())
    assert exchange.closed
    assert not process.closed  # the process outlives its bots


def test_a_bot_built_without_a_process_owns_one_and_closes_it(settings: Settings) -> None:
    bot = make_bot(settings, Exchange())
    other = make_bot(settings, Exchange())
    assert bot.process is not other.process  # nothing shared behind the bots' backs
    assert bot.writes is bot.process.writes
    asyncio.run(bot.close())
    assert bot.process.closed
    assert not other.process.closed


# --------------------------------------------------------------------- the capability


def test_the_interface_default_does_not_book_the_mark() -> None:
    spot = Spot()
    assert spot.books_submitted_mark is False
    with pytest.raises(NotImplementedError):
        asyncio.run(spot.create_marked_order(request("x"), "signal"))


def test_a_paper_broker_books_the_mark_and_ccxt_does_not(settings: Settings) -> None:
    assert PaperBroker(settings, 1, Spot()).books_submitted_mark is True
    client = CcxtExecutionClient.for_exchange("binance", enable_rate_limit=False)
    try:
        assert client.books_submitted_mark is False
    finally:
        asyncio.run(client.close())


def test_orders_to_mark_go_to_the_marking_call() -> None:
    exchange = Exchange()
    items: list[Any] = [(exchange, request("m"), "signal"), (exchange, request("p"), None)]
    marked, plain = asyncio.run(send_orders(items))
    assert isinstance(marked, OrderRejected)
    assert (marked.code, marked.reason) == ("marked", "signal")
    assert isinstance(plain, OrderRejected)
    assert plain.code == "plain"


def test_the_runtime_reads_the_capability_not_the_class(settings: Settings) -> None:
    # Paper vs live is the client's capability: the runtime never imports the paper broker.
    assert not hasattr(runtime, "PaperBroker")
    assert make_bot(settings, PaperBroker(settings, 1, Spot()))._books_mark  # noqa: SLF001
    assert not make_bot(settings, Spot())._books_mark  # noqa: SLF001
    assert not make_bot(settings, Exchange())._books_mark  # noqa: SLF001 (declares nothing)
