"""The market feed's hub without a network: close detection, fan-out, back-off, slow clients."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from cryptoorchestrator.platform.data.store import OhlcvStore
from cryptoorchestrator.platform.errors import (
    InvalidInputError,
    RetryableExchangeError,
    UnavailableError,
)
from cryptoorchestrator.platform.exchange.execution import Candle, Ticker
from cryptoorchestrator.platform.services.market_feed import (
    CloseTracker,
    FeedKey,
    MarketFeedHub,
    PollerStats,
    Subscriber,
)
from cryptoorchestrator.platform.services.market_sources import (
    CcxtMarketSource,
    StoreMarketSource,
    feed_exchanges,
    market_sources,
)
from cryptoorchestrator.platform.settings import Settings

HOUR = 3_600_000
T0 = 1_710_000_000_000 - 1_710_000_000_000 % HOUR
KEY = FeedKey("binance", "BTC/USDT", "1h")


def _candle(t: int) -> Candle:
    """Distinct, recognisable values per open time."""
    base = float((t - T0) // HOUR + 100)
    return Candle(t, base, base + 2, base - 1, base + 1, base * 10)


class ScriptedSource:
    """An in-memory exchange whose clock the test moves; fails while ``failures`` lasts."""

    live = True

    def __init__(self, symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")) -> None:
        self._symbols = sorted(symbols)
        self.now_ms = T0 + HOUR // 2  # inside the candle opening at T0
        self.failures: list[Exception] = []
        self.calls: Counter[tuple[str, str]] = Counter()
        self.closed = False

    async def symbols(self) -> list[str]:
        if self.failures:
            raise self.failures.pop(0)
        return list(self._symbols)

    async def fetch_ticker(self, symbol: str) -> Ticker | None:
        self.calls["ticker", symbol] += 1
        if self.failures:
            raise self.failures.pop(0)
        return Ticker(symbol, Decimal(self.now_ms % 10_000_000), timestamp_ms=self.now_ms)

    async def fetch_ohlcv(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        self.calls["ohlcv", symbol] += 1
        newest = self.now_ms - self.now_ms % HOUR
        return [_candle(newest - i * HOUR) for i in reversed(range(limit))]

    async def close(self) -> None:
        self.closed = True


class Steps:
    """The hub's pause between polls: each waits until the test lets one poll go on."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._go: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await self._go.get()

    async def settled(self, pauses: int) -> None:
        """Wait until the pollers paused ``pauses`` times in all (each poll ends in a pause)."""
        async with asyncio.timeout(30):
            while len(self.pauses) < pauses:
                await asyncio.sleep(0)

    async def step(self, pollers: int = 1) -> None:
        """Let ``pollers`` paused pollers poll once more, and wait until they did."""
        before = len(self.pauses)
        for _ in range(pollers):
            self._go.put_nowait(None)
        await self.settled(before + pollers)


def _drain(sub: Subscriber) -> list[dict[str, Any]]:
    out = []
    while (message := sub.get_nowait()) is not None:
        out.append(message)
    return out


def _candle_message(t: int) -> dict[str, Any]:
    c = _candle(t)
    return {
        "type": "candle",
        "symbol": "BTC/USDT",
        "exchange": "binance",
        "timeframe": "1h",
        "timestamp": t,
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.volume,
    }


# ---------------------------------------------------------------- close detection


def test_first_answer_yields_only_the_latest_closed_candle() -> None:
    tracker = CloseTracker("1h")
    rows = [_candle(T0 + i * HOUR) for i in range(4)]  # the last one is forming
    assert tracker.observe(rows) == [rows[2]]
    assert tracker.last_closed_ms == rows[2].timestamp_ms
    assert tracker.observe(rows) == []  # nothing new


def test_a_later_candle_closes_the_ones_before_it_in_order() -> None:
    tracker = CloseTracker("1h")
    tracker.observe([_candle(T0), _candle(T0 + HOUR)])
    # Three hours passed between polls: three candles closed, sent oldest first.
    later = [_candle(T0 + i * HOUR) for i in range(5)]
    assert tracker.observe(list(reversed(later))) == later[1:4]


def test_the_exchange_time_closes_the_newest_candle() -> None:
    tracker = CloseTracker("1h")
    rows = [_candle(T0), _candle(T0 + HOUR)]
    assert tracker.observe(rows, now_ms=T0 + 2 * HOUR - 1) == [rows[0]]
    assert tracker.observe(rows, now_ms=T0 + 2 * HOUR) == [rows[1]]


def test_a_source_going_back_in_time_starts_over() -> None:
    tracker = CloseTracker("1h")
    tracker.observe([_candle(T0 + 10 * HOUR), _candle(T0 + 11 * HOUR)])
    restarted = [_candle(T0), _candle(T0 + HOUR)]
    assert tracker.observe(restarted) == [restarted[0]]


def test_stored_candles_are_all_closed() -> None:
    tracker = CloseTracker("1h", live=False)
    rows = [_candle(T0), _candle(T0 + HOUR)]
    assert tracker.observe(rows) == [rows[1]]
    assert tracker.observe([]) == []


# ---------------------------------------------------------------- subscriber queue


def test_a_full_queue_drops_the_oldest_and_says_so() -> None:
    sub = Subscriber(max_queue=2)
    for i in range(5):
        sub.put({"n": i})
    dropped = sub.get_nowait()
    assert dropped is not None
    assert (dropped["type"], dropped["code"], dropped["dropped"]) == ("error", "slow_consumer", 3)
    assert _drain(sub) == [{"n": 3}, {"n": 4}]
    assert sub.dropped_total == 3
    with pytest.raises(InvalidInputError):
        Subscriber(max_queue=0)


# ---------------------------------------------------------------- the hub


def test_two_subscribers_share_one_poller_that_stops_with_the_last(run: Any) -> None:
    async def main() -> None:
        source, steps, built = ScriptedSource(), Steps(), []

        def build(exchange: str) -> ScriptedSource:
            built.append(exchange)
            return source

        hub = MarketFeedHub(build, ["binance"], poll_s=1.0, sleep=steps.sleep)
        a, b = Subscriber(), Subscriber()
        assert hub.subscribe(KEY, a) == []  # nothing polled yet
        await steps.settled(1)
        snapshot = hub.subscribe(KEY, b)
        assert snapshot[0] == _candle_message(T0 - HOUR)  # the latest closed candle
        assert snapshot[1]["type"] == "ticker"
        assert snapshot[1]["price"] == float(source.now_ms % 10_000_000)
        assert _drain(a) == snapshot

        source.now_ms += HOUR  # the candle of T0 closes
        await steps.step()
        for sub in (a, b):
            got = _drain(sub)
            assert got[0] == _candle_message(T0)
            assert got[1]["timestamp"] == source.now_ms
        assert hub.stats() == {KEY: PollerStats(2, 2, 0, 2, False)}
        assert source.calls["ohlcv", "BTC/USDT"] == 2  # one poller, not one per subscriber
        assert built == ["binance"]

        await steps.step()  # nothing new: no candle, and the same quote is not sent again
        assert _drain(a) == []

        await hub.unsubscribe(KEY, a)
        assert hub.stats()[KEY].subscribers == 1
        await hub.unsubscribe(KEY, b)
        assert hub.stats() == {}
        polls = source.calls["ohlcv", "BTC/USDT"]
        steps._go.put_nowait(None)  # a stopped poller takes no more turns
        for _ in range(10):
            await asyncio.sleep(0)
        assert source.calls["ohlcv", "BTC/USDT"] == polls

        # A new subscriber starts a fresh poller on the same source.
        hub.subscribe(KEY, a)
        await steps.settled(len(steps.pauses) + 1)
        assert _drain(a)[0] == _candle_message(T0)
        await hub.close()
        assert source.closed
        assert hub.stats() == {}

    run(main)


def test_source_errors_reach_subscribers_and_the_poller_backs_off(run: Any) -> None:
    async def main() -> None:
        source, steps = ScriptedSource(), Steps()
        source.failures = [RetryableExchangeError("down") for _ in range(4)]
        hub = MarketFeedHub(
            lambda _ex: source, ["binance"], poll_s=1.0, backoff_max_s=6.0, sleep=steps.sleep
        )
        sub = Subscriber()
        hub.subscribe(KEY, sub)
        await steps.settled(1)
        (error,) = _drain(sub)
        assert error["type"] == "error"
        assert error["code"] == "source_error"
        assert FeedKey(error["exchange"], error["symbol"], error["timeframe"]) == KEY
        assert "RetryableExchangeError" in error["message"]
        assert error["retryInSeconds"] == 2.0
        for _ in range(3):
            await steps.step()
        assert _drain(sub) == []  # the same failure is told once, not on every retry
        assert steps.pauses == [2.0, 4.0, 6.0, 6.0]  # doubling up to backoff_max_s
        late = Subscriber()
        (current,) = hub.subscribe(KEY, late)  # a newcomer learns of the failure at once
        assert current["code"] == "source_error"
        assert current["retryInSeconds"] == 6.0
        assert hub.stats()[KEY] == PollerStats(2, 0, 4, 0, True)

        await steps.step()  # the source answers again: data, and the normal pace
        assert steps.pauses[-1] == 1.0
        for s in (sub, late):
            got = _drain(s)
            assert [m["type"] for m in got] == ["candle", "ticker"]
        assert hub.stats()[KEY].failing is False
        await hub.close()

    run(main)


def test_a_slow_subscriber_never_holds_up_the_others(run: Any) -> None:
    async def main() -> None:
        source, steps = ScriptedSource(), Steps()
        hub = MarketFeedHub(lambda _ex: source, ["binance"], sleep=steps.sleep)
        slow, fast = Subscriber(max_queue=2), Subscriber()
        hub.subscribe(KEY, slow)
        hub.subscribe(KEY, fast)
        await steps.settled(1)
        for _ in range(3):
            source.now_ms += HOUR
            await steps.step()
        got = _drain(fast)
        candles = [m["timestamp"] for m in got if m["type"] == "candle"]
        assert candles == [T0 - HOUR, T0, T0 + HOUR, T0 + 2 * HOUR]
        told = _drain(slow)
        assert told[0]["code"] == "slow_consumer"
        assert told[0]["dropped"] == len(got) - 2
        assert told[1:] == got[-2:]  # it keeps the newest
        await hub.close()

    run(main)


def test_limits_and_unknown_exchanges(run: Any) -> None:
    async def main() -> None:
        source, steps = ScriptedSource(), Steps()
        hub = MarketFeedHub(lambda _ex: source, ["binance"], max_pollers=1, sleep=steps.sleep)
        sub = Subscriber()
        hub.subscribe(KEY, sub)
        hub.subscribe(KEY, sub)  # twice: still one subscription
        assert hub.stats()[KEY].subscribers == 1
        with pytest.raises(UnavailableError, match="at most 1 markets"):
            hub.subscribe(FeedKey("binance", "ETH/USDT", "1h"), sub)
        with pytest.raises(InvalidInputError) as info:
            hub.subscribe(FeedKey("kraken", "BTC/USDT", "1h"), sub)
        assert info.value.field == "exchange"
        assert await hub.symbols("binance") == ["BTC/USDT", "ETH/USDT"]
        source.failures = [RetryableExchangeError("http://user:pw@host down")]
        with pytest.raises(UnavailableError) as down:
            await hub.symbols("binance")
        assert "pw" not in str(down.value)
        await hub.unsubscribe_all(sub)
        assert hub.stats() == {}
        await hub.close()

    run(main)


# ---------------------------------------------------------------- the operator's sources


def test_store_source_sends_the_newest_stored_candle(settings: Settings, run: Any) -> None:
    store = OhlcvStore(settings.data_dir)

    async def main() -> None:
        steps = Steps()
        hub = MarketFeedHub(lambda ex: StoreMarketSource(store, ex), ["binance"], sleep=steps.sleep)
        assert "BTC/USDT" in await hub.symbols("binance")  # bundled
        sub = Subscriber()
        hub.subscribe(KEY, sub)
        await steps.settled(1)
        candle, ticker = _drain(sub)
        info = store.info("binance", "BTC/USDT", "1h")  # seeded by the first poll
        assert info is not None
        last = store.read("binance", "BTC/USDT", "1h", start=info.last).to_pylist()[-1]
        assert candle == {"type": "candle", "exchange": "binance", "timeframe": "1h"} | {
            "symbol": "BTC/USDT",
            **last,
        }
        assert ticker == {
            "type": "ticker",
            "symbol": "BTC/USDT",
            "exchange": "binance",
            "price": last["close"],
            "timestamp": last["timestamp"],
        }
        await steps.step()
        assert _drain(sub) == []  # the store did not change
        await hub.close()

    run(main)


def test_sources_follow_the_operators_settings(settings: Settings) -> None:
    sim = "http://127.0.0.1:9"
    auto = settings.model_copy(update={"exchange_endpoints": {"kraken": sim}})
    build = market_sources(auto)
    kraken = build("kraken")
    assert isinstance(kraken, CcxtMarketSource)
    assert kraken.api_url == sim
    assert isinstance(build("binance"), StoreMarketSource)
    assert feed_exchanges(auto, "binance") == ["binance", "kraken"]

    everything = settings.model_copy(update={"market_feed": "exchange"})
    binance = market_sources(everything)("binance")
    assert isinstance(binance, CcxtMarketSource)
    assert binance.api_url is None  # the exchange's own public API
    stored = auto.model_copy(update={"market_feed": "store"})
    assert isinstance(market_sources(stored)("kraken"), StoreMarketSource)
    with pytest.raises(ValueError, match="market_feed"):
        Settings(market_feed="live")  # type: ignore[arg-type]
