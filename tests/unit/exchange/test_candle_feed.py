"""CandleFeed's logic against a scripted stand-in for a ccxt.pro client (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt
import pytest

from cryptoorchestrator.platform.exchange import candle_feed
from cryptoorchestrator.platform.exchange.candle_feed import CandleFeed

H = 3_600_000
T = 1_710_111_600_000  # an hour's open
SYMBOL = "BTC/USDT"


class ScriptedClient:
    """Answers ``watch_ohlcv`` with whatever the test queues: candle lists or exceptions."""

    id = "scripted"

    def __init__(self, *, streams: bool = True) -> None:
        self.has = {"watchOHLCV": streams}
        self.answers: asyncio.Queue[list[list[float]] | Exception] = asyncio.Queue()
        self.calls = 0
        self.closed = False

    async def watch_ohlcv(self, symbol: str, timeframe: str) -> list[list[float]]:
        self.calls += 1
        answer = await self.answers.get()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True


def candle(open_ms: int) -> list[float]:
    return [open_ms, 1.0, 2.0, 0.5, 1.5, 10.0]


async def answered(feed: CandleFeed, timeframe: str, events: int) -> None:
    """Wait until the feed has taken ``events`` answers of the stream."""
    async with asyncio.timeout(2):
        while feed.stats(SYMBOL, timeframe).events < events:
            await asyncio.sleep(0)


def test_a_newer_candle_closes_the_ones_before_it(run: Any) -> None:
    async def main() -> None:
        client = ScriptedClient()
        feed = CandleFeed(client)
        feed.watch(SYMBOL, "1h")
        client.answers.put_nowait([candle(T)])
        await answered(feed, "1h", 1)
        # A candle exists only once its hour began: the hour before it is over.
        assert feed.last_closed(SYMBOL, "1h") == T - H
        assert feed.stats(SYMBOL, "1h").closes == 0  # a baseline, not a close seen happening
        assert feed.connected(SYMBOL, "1h")

        client.answers.put_nowait([candle(T)])  # the forming candle again (or its final state)
        await answered(feed, "1h", 2)
        assert feed.last_closed(SYMBOL, "1h") == T - H

        client.answers.put_nowait([candle(T + H)])
        await answered(feed, "1h", 3)
        assert feed.last_closed(SYMBOL, "1h") == T
        client.answers.put_nowait([candle(T + 3 * H)])  # updates were missed meanwhile
        await answered(feed, "1h", 4)
        assert feed.last_closed(SYMBOL, "1h") == T + 2 * H
        client.answers.put_nowait([candle(T)])  # a late update of an old candle changes nothing
        await answered(feed, "1h", 5)
        stats = feed.stats(SYMBOL, "1h")
        assert (stats.last_closed_ms, stats.closes, stats.errors) == (T + 2 * H, 2, 0)
        await feed.close()
        assert client.closed

    run(main)


def test_calendar_timeframes_count_only_candles_seen(run: Any) -> None:
    async def main() -> None:
        client = ScriptedClient()
        feed = CandleFeed(client)
        feed.watch(SYMBOL, "1M")  # months differ in length: no arithmetic on open times
        client.answers.put_nowait([candle(T)])
        await answered(feed, "1M", 1)
        assert feed.last_closed(SYMBOL, "1M") is None
        client.answers.put_nowait([candle(T + 31 * 24 * H), candle(T + 59 * 24 * H)])
        await answered(feed, "1M", 2)
        assert feed.last_closed(SYMBOL, "1M") == T + 31 * 24 * H
        await feed.close()

    run(main)


def test_wait_closed_returns_at_once_on_a_push_or_none_at_timeout(run: Any) -> None:
    async def main() -> None:
        client = ScriptedClient()
        feed = CandleFeed(client)
        waiter = asyncio.create_task(feed.wait_closed(SYMBOL, "1h", T - H, timeout=5))
        async with asyncio.timeout(2):
            while client.calls == 0:  # waiting started the watcher
                await asyncio.sleep(0)
        client.answers.put_nowait([candle(T)])
        await asyncio.sleep(0)
        assert not waiter.done()  # T - H closing is not a close after T - H
        client.answers.put_nowait([candle(T + H)])
        assert await waiter == T

        # Already known: no waiting at all, even with no time to wait.
        assert await feed.wait_closed(SYMBOL, "1h", T - H, timeout=0) == T
        assert await feed.wait_closed(SYMBOL, "1h", T - H, timeout=None) == T
        assert await feed.wait_closed(SYMBOL, "1h", T, timeout=0) is None
        assert await feed.wait_closed(SYMBOL, "1h", T, timeout=0.05) is None
        assert feed.connected(SYMBOL, "1h")
        await feed.close()

    run(main)


def test_failures_back_off_and_the_stream_recovers(
    monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    monkeypatch.setattr(candle_feed, "BACKOFF_MIN_S", 0.001)
    monkeypatch.setattr(candle_feed, "BACKOFF_MAX_S", 0.004)

    async def main() -> None:
        client = ScriptedClient()
        feed = CandleFeed(client)
        feed.watch(SYMBOL, "1h")
        client.answers.put_nowait([candle(T)])
        await answered(feed, "1h", 1)
        for error in (
            ccxt.NetworkError("Connection closed by remote server, closing code 1006"),
            ConnectionResetError("Cannot write to closing transport"),  # aiohttp's, unwrapped
            ccxt.ExchangeError("binance {}"),
        ):
            client.answers.put_nowait(error)
        async with asyncio.timeout(2):
            while feed.stats(SYMBOL, "1h").errors < 3:
                await asyncio.sleep(0.001)
        assert not feed.connected(SYMBOL, "1h")
        client.answers.put_nowait([candle(T + H)])
        await answered(feed, "1h", 2)
        stats = feed.stats(SYMBOL, "1h")
        assert (stats.connected, stats.errors, stats.reconnects) == (True, 3, 1)
        assert stats.last_closed_ms == T
        assert (feed.events, feed.reconnects) == (2, 1)
        await feed.close()

    run(main)


def test_close_stops_watchers_and_releases_waiters(run: Any) -> None:
    async def main() -> None:
        client = ScriptedClient()
        feed = CandleFeed(client)
        feed.watch(SYMBOL, "4h")
        waiter = asyncio.create_task(feed.wait_closed(SYMBOL, "1h", T, timeout=30))
        await asyncio.sleep(0)
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("candle-feed")]
        assert len(tasks) == 2
        await feed.close()
        assert await asyncio.wait_for(waiter, 1) is None
        assert all(t.done() for t in tasks)
        assert client.closed
        assert not feed.connected(SYMBOL, "1h")
        with pytest.raises(RuntimeError, match="closed"):
            feed.watch(SYMBOL, "1h")

    run(main)


def test_exchanges_that_cannot_stream_just_time_out(run: Any) -> None:
    async def main() -> None:
        unknown = CandleFeed.acquire("no_such_exchange")
        assert unknown.client is None
        assert not unknown.supported
        await unknown.close()
        for client in (None, ScriptedClient(streams=False)):
            feed = CandleFeed(client)
            assert not feed.supported
            assert await feed.wait_closed(SYMBOL, "1h", T, timeout=0.02) is None
            assert not feed.connected(SYMBOL, "1h")
            assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("candle")]
            await feed.close()

    run(main)


def test_acquire_shares_one_feed_per_exchange_url_and_loop(run: Any) -> None:
    built: list[ScriptedClient] = []

    def build() -> ScriptedClient:
        built.append(ScriptedClient())
        return built[-1]

    async def main() -> None:
        url = "http://bot:hunter2@127.0.0.1:9"
        before = len(built)
        a = CandleFeed.acquire("binance", url, build=build)
        b = CandleFeed.acquire("binance", url, build=build)
        c = CandleFeed.acquire("binance", None, build=build)
        assert a is b
        assert a is not c
        assert len(built) == before + 2
        assert "hunter2" not in a.name
        await a.close()
        assert not built[before].closed  # b still holds a share
        assert CandleFeed.acquire("binance", url, build=build) is a
        await a.close()
        await b.close()
        assert built[before].closed
        fresh = CandleFeed.acquire("binance", url, build=build)
        assert fresh is not a
        await fresh.close()
        await c.close()

    run(main)
    run(main)  # a new loop never finds the old loop's feeds: it builds its own clients
    assert len(built) == 6
