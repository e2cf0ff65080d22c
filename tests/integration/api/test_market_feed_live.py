"""``/ws/market-data`` live: the exchange simulator through ccxt, a real uvicorn, real sockets.

The app is configured as ``cryptoorch serve --demo`` configures it (the simulator is binance's
endpoint), served by uvicorn on a free port; clients connect with ``websockets``.  The
simulator's clock stands still until a test advances it, so "a candle closed after subscribing"
is a fact the test makes, not a race.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pyarrow as pa
import pytest
import uvicorn
from fastapi import FastAPI
from tests.integration.api.conftest import options
from websockets.asyncio.client import ClientConnection, connect

from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.platform.exchange.sim import ExchangeSimulator, run_simulator_in_thread
from cryptoorchestrator.platform.services.market_feed import FeedKey, MarketFeedHub, PollerStats
from cryptoorchestrator.platform.services.market_sources import feed_exchanges, market_sources
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade

HOUR = 3_600_000
SYMBOL = "BTC/USDT"
KEY = FeedKey("binance", SYMBOL, "1h")
#: Generous bound on any one wait: the machine may be busy, nothing here is timed.
WAIT_S = 60.0
T = TypeVar("T")


@dataclass
class Server:
    """An app under uvicorn in a thread of its own."""

    app: FastAPI
    url: str
    loop: asyncio.AbstractEventLoop

    @property
    def hub(self) -> MarketFeedHub:
        hub: MarketFeedHub = self.app.state.context.feed
        return hub

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's event loop (where the hub lives) and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(WAIT_S)

    async def stats(self) -> dict[FeedKey, PollerStats]:
        """Return the hub's pollers, read on the server's loop."""
        return await asyncio.to_thread(self.call, self.hub.stats)


@contextmanager
def _serve(app: FastAPI) -> Iterator[Server]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(),), name="uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Server(app, f"127.0.0.1:{port}", loop)
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        loop.close()


@pytest.fixture
def ts(candles: pa.Table) -> list[int]:
    return [int(t) for t in candles.column("timestamp").to_pylist()]


@pytest.fixture
def sim(candles: pa.Table, ts: list[int]) -> Iterator[ExchangeSimulator]:
    """The simulator, its clock standing inside the candle that opened at ``ts[2000]``."""
    with run_simulator_in_thread({SYMBOL: candles}, start_ms=ts[2000] + HOUR // 2) as sim:
        yield sim


@pytest.fixture
def demo_settings(settings: Settings, sim: ExchangeSimulator) -> Settings:
    """Settings as ``serve --demo`` makes them: the simulator is binance's endpoint."""
    configured = settings.model_copy(update={"exchange_endpoints": {"binance": sim.base_url}})
    upgrade(configured)
    return configured


@pytest.fixture
def server(demo_settings: Settings) -> Iterator[Server]:
    with _serve(create_app(demo_settings, options=options())) as served:
        yield served
    dispose_engines()


async def _send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _next(ws: ClientConnection, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Return the next message passing ``check`` (tickers and the like in between skipped)."""
    async with asyncio.timeout(WAIT_S):
        while not check(message := json.loads(await ws.recv())):
            pass
    return message


def _candle(t: int) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "candle" and m["timestamp"] == t


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not await check():
            await asyncio.sleep(0.02)


async def _subscribe(ws: ClientConnection, **extra: Any) -> None:
    await _send(ws, {"type": "subscribe", "symbols": [SYMBOL], **extra})
    assert await _recv(ws) == {"type": "subscribed", "symbols": [SYMBOL]}


def test_a_candle_closed_after_subscribing_arrives_with_the_exchanges_values(
    server: Server, sim: ExchangeSimulator, candles: pa.Table, ts: list[int], run: Any
) -> None:
    async def main() -> None:
        async with connect(f"ws://{server.url}/ws/market-data") as ws:
            await _subscribe(ws)
            # At once: the latest candle closed on the exchange, then its quote.
            first = await _recv(ws)
            assert (first["type"], first["timestamp"]) == ("candle", ts[1999])
            quote = await _recv(ws)
            assert (quote["type"], quote["timestamp"]) == ("ticker", sim.now())

            now = sim.advance(HOUR)  # the candle of ts[2000] closes on the simulator
            closed = await _next(ws, _candle(ts[2000]))
            row = candles.slice(2000, 1).to_pylist()[0]
            assert closed["symbol"] == SYMBOL
            assert (closed["exchange"], closed["timeframe"]) == ("binance", "1h")
            for field in ("open", "high", "low", "close", "volume"):
                assert closed[field] == pytest.approx(row[field], rel=1e-9), field
            ticker = await _next(ws, lambda m: m["type"] == "ticker")
            assert ticker["timestamp"] == now
            assert ticker["bid"] <= ticker["price"] <= ticker["ask"]

    run(main)


def test_subscribers_share_one_poller_which_stops_with_the_last(
    server: Server, sim: ExchangeSimulator, ts: list[int], run: Any
) -> None:
    async def main() -> None:
        url = f"ws://{server.url}/ws/market-data"
        async with connect(url) as a:
            async with connect(url) as b:
                await _subscribe(a)
                await _subscribe(b, exchange="binance", timeframe="1h")  # the defaults, named
                for ws in (a, b):
                    await _next(ws, _candle(ts[1999]))
                stats = await server.stats()
                assert list(stats) == [KEY]
                assert stats[KEY].subscribers == 2

                sim.advance(HOUR)
                for ws in (a, b):  # one poll, every subscriber
                    await _next(ws, _candle(ts[2000]))
                # One reader of the exchange: one kline request per poll, not per subscriber
                # (read around the count, each request ends in a poll or is the one in flight).
                before = sim.stats["GET /api/v3/klines"]
                polls = (await server.stats())[KEY].polls
                after = sim.stats["GET /api/v3/klines"]
                assert before <= polls + 1
                assert polls <= after

            # b went away without unsubscribing: the hub lets it go.
            async def one_left() -> bool:
                return (await server.stats())[KEY].subscribers == 1

            await _until(one_left)
            await _send(a, {"type": "unsubscribe", "symbols": [SYMBOL]})
            assert await _next(a, lambda m: m["type"] == "unsubscribed") == {
                "type": "unsubscribed",
                "symbols": [SYMBOL],
            }
            assert await server.stats() == {}  # the last one left: the poller is stopped
            await _send(a, {"type": "ping"})
            reply = await _next(a, lambda m: m["type"] not in ("ticker", "candle"))
            assert reply == {"type": "pong"}

    run(main)


def test_unknown_symbols_exchanges_and_timeframes_name_the_valid_ones(
    server: Server, run: Any
) -> None:
    async def main() -> None:
        async with connect(f"ws://{server.url}/ws/market-data") as ws:
            await _send(ws, {"type": "subscribe", "symbols": ["DOGE/USDT"]})
            unknown = await _recv(ws)
            assert unknown["code"] == "unknown_symbol"
            assert unknown["validSymbols"] == [SYMBOL]  # the simulator's markets
            assert "GET /api/markets/symbols" in unknown["message"]
            await _send(ws, {"type": "subscribe", "symbols": ["BTCUSDT"]})
            malformed = await _recv(ws)
            assert malformed["code"] == "invalid_symbol"
            assert "did you mean BTC/USDT?" in malformed["message"]
            await _send(ws, {"type": "subscribe", "symbols": [SYMBOL], "exchange": "nope"})
            exchange = await _recv(ws)
            assert exchange["code"] == "unknown_exchange"
            assert "binance" in exchange["validExchanges"]
            await _send(ws, {"type": "subscribe", "symbols": [SYMBOL], "timeframe": "7m"})
            timeframe = await _recv(ws)
            assert timeframe["code"] == "invalid_timeframe"
            assert "1h" in timeframe["validTimeframes"]
            assert await server.stats() == {}  # nothing was subscribed

        async with httpx.AsyncClient(base_url=f"http://{server.url}") as http:
            listed = (await http.get("/api/markets/symbols")).json()
            binance = next(e for e in listed if e["exchange"] == "binance")
            assert binance == {
                "exchange": "binance",
                "source": "exchange",
                "timeframe": "1h",
                "symbols": [SYMBOL],
                "error": None,
            }
            one = await http.get("/api/markets/symbols", params={"exchange": "nope"})
            assert one.status_code == 422
            assert one.json()["details"][0]["field"] == "exchange"

    run(main)


def test_a_failing_exchange_is_reported_and_the_feed_recovers(
    demo_settings: Settings, sim: ExchangeSimulator, ts: list[int], run: Any
) -> None:
    hub = MarketFeedHub(
        market_sources(demo_settings),
        feed_exchanges(demo_settings, "binance"),
        poll_s=0.05,
        backoff_max_s=0.5,
    )
    app = create_app(demo_settings, options=options(), feed=hub)
    sim.set_faults(fail_next=1_000_000, fail_status=503, path_prefix="/api/v3/")

    async def main() -> None:
        async with connect(f"ws://{served.url}/ws/market-data") as ws:
            # The exchange cannot even list its markets: the subscription is refused, saying so.
            await _send(ws, {"type": "subscribe", "symbols": [SYMBOL]})
            refused = await _recv(ws)
            assert refused["code"] == "source_unavailable"
            assert "binance" in refused["message"]
            assert sim.base_url not in refused["message"]
            assert await served.stats() == {}

            # It lists them, but its quotes fail: subscribed, then told of the failure.
            sim.set_faults(path_prefix="/api/v3/ticker")
            await _subscribe(ws)
            error = await _recv(ws)
            assert error["type"] == "error"
            assert error["code"] == "source_error"
            assert FeedKey(error["exchange"], error["symbol"], error["timeframe"]) == KEY
            assert error["retryInSeconds"] > 0
            assert sim.base_url not in error["message"]
            assert (await served.stats())[KEY].failing

            sim.clear_faults()
            sim.advance(HOUR)
            await _next(ws, _candle(ts[2000]))  # the stream resumes by itself
            assert not (await served.stats())[KEY].failing

    with _serve(app) as served:
        run(main)
    dispose_engines()
