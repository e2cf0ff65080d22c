"""Live market data for many subscribers: one poller per (exchange, symbol, timeframe), fanned out.

The head node's ``/ws/market-data`` serves any number of clients, but the exchange must see one
reader per market, not one per client.  :class:`MarketFeedHub` keeps one poller task per
:class:`FeedKey`, started by its first subscriber and stopped when its last one leaves.  Each poll
reads the ticker and the newest few candles from a :class:`MarketDataSource` (the exchange through
ccxt, or the market-data store; see :mod:`~cryptoorchestrator.platform.services.market_sources`),
and puts what is new into every subscriber's own bounded queue:

* ``candle`` messages for the candles that closed since the last poll (:class:`CloseTracker`),
* a ``ticker`` message when the quote changed,
* an ``error`` message (code ``source_error``) when the source fails; the poller then backs off,
  doubling its pause up to ``backoff_max_s``, and resumes at ``poll_s`` once it answers again.

A new subscriber first gets the latest closed candle, ticker and current error of its market
(those are the state of the market, not history).  Putting never waits: a subscriber whose queue
is full loses its oldest message, and the next message it takes is an ``error`` with code
``slow_consumer`` saying how many were dropped; a slow client never holds up the poller or the
other clients.

Everything here runs on one event loop (the head node's); nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from cryptoorchestrator.platform.errors import InvalidInputError, UnavailableError
from cryptoorchestrator.platform.exchange.execution import Candle, Ticker
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms

log = logging.getLogger(__name__)

#: Candles read per poll: a few, so closes missed while backing off are still sent in order.
HISTORY = 5
#: Messages a subscriber's queue holds before the oldest are dropped.
QUEUE_SIZE = 256
#: Pollers a hub runs at most (each reads its exchange every ``poll_s``).
MAX_POLLERS = 256
#: Longest pause between polls of a failing source.
BACKOFF_MAX_S = 30.0

_USERINFO = re.compile(r"//[^/@\s]+@")


class FeedKey(NamedTuple):
    """One polled market: ``("binance", "BTC/USDT", "1h")``."""

    exchange: str
    symbol: str
    timeframe: str


class MarketDataSource(Protocol):
    """Where a poller reads one exchange's market data.

    Attributes
    ----------
    live
        Whether the newest candle an answer holds may still be forming (an exchange: yes; a
        store of history: no, every stored candle is closed).
    """

    live: bool

    async def symbols(self) -> list[str]:
        """Return the exchange's symbols (``BASE/QUOTE``), sorted."""
        ...

    async def fetch_ohlcv(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        """Return the newest ``limit`` candles of ``symbol``, oldest first."""
        ...

    async def fetch_ticker(self, symbol: str) -> Ticker | None:
        """Return the latest quote (None: the source has none; the last close stands in)."""
        ...

    async def close(self) -> None:
        """Release the source's connections."""
        ...


class CloseTracker:
    """Which candles of successive polled answers have newly closed.

    A candle is known closed once a later candle exists in the same answer (the exchange opened
    the next interval), or once the exchange's time (the ticker's) is past its end.  The first
    answer yields only its latest closed candle: a subscriber wants the market's current state,
    not its history.  An answer whose candles all lie before the last close (the source went
    back in time, e.g. a restarted simulator) starts over as a first answer.

    Parameters
    ----------
    timeframe
        The candles' timeframe (``1h``); calendar timeframes only close by a later candle.
    live
        Whether the newest candle of an answer may still be forming.
    """

    def __init__(self, timeframe: str, *, live: bool = True) -> None:
        self.live = live
        try:
            self.tf_ms: int | None = timeframe_to_ms(timeframe)
        except InvalidInputError:
            self.tf_ms = None
        self.last_closed_ms: int | None = None

    def observe(self, candles: Sequence[Candle], now_ms: int | None = None) -> list[Candle]:
        """Return the candles of ``candles`` that closed since the previous answer, oldest first.

        Parameters
        ----------
        candles
            One polled answer (any order; a repeated open time keeps its last row).
        now_ms
            The exchange's time when (or before) the answer was read, if known.
        """
        rows = sorted({int(c.timestamp_ms): c for c in candles}.values(), key=lambda c: c[0])
        if not rows:
            return []
        closed = rows
        if self.live:
            newest = rows[-1]
            ended = (
                self.tf_ms is not None
                and now_ms is not None
                and now_ms >= newest.timestamp_ms + self.tf_ms
            )
            closed = rows if ended else rows[:-1]
        last = self.last_closed_ms
        if last is not None and rows[-1].timestamp_ms < last:
            last = None  # the source went back in time: start over
        if not closed:
            self.last_closed_ms = last
            return []
        if last is None:
            fresh = [closed[-1]]
        else:
            fresh = [c for c in closed if c.timestamp_ms > last]
        if fresh:
            self.last_closed_ms = fresh[-1].timestamp_ms
        else:
            self.last_closed_ms = last
        return fresh


class Subscriber:
    """One client's bounded queue of messages; putting never waits.

    Parameters
    ----------
    max_queue
        Messages held at most; beyond it the oldest is dropped and counted.
    """

    def __init__(self, max_queue: int = QUEUE_SIZE) -> None:
        if max_queue < 1:
            raise InvalidInputError("max_queue", "must be at least 1")
        self.max_queue = max_queue
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._dropped = 0
        #: Messages dropped over the subscriber's life.
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: dict[str, Any]) -> None:
        """Queue ``message``; drop the oldest one if the queue is full."""
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self._dropped += 1
            self.dropped_total += 1
        self._queue.append(message)
        self._ready.set()

    def get_nowait(self) -> dict[str, Any] | None:
        """Return the next message, or None if none is queued.

        After drops the next message is an ``error`` (``slow_consumer``) counting them.
        """
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return {
                "type": "error",
                "code": "slow_consumer",
                "message": f"{count} message(s) dropped: the client reads too slowly",
                "dropped": count,
            }
        if not self._queue:
            self._ready.clear()
            return None
        return self._queue.popleft()

    async def get(self) -> dict[str, Any]:
        """Wait for and return the next message (see :meth:`get_nowait`)."""
        while True:
            message = self.get_nowait()
            if message is not None:
                return message
            await self._ready.wait()


@dataclass(frozen=True)
class PollerStats:
    """A snapshot of one poller, for health views and tests.

    Attributes
    ----------
    subscribers
        Subscribers of its market.
    polls
        Polls answered.
    errors
        Polls failed.
    closes
        Closed candles published (the first poll's latest closed candle included).
    failing
        Whether its last poll failed.
    """

    subscribers: int
    polls: int
    errors: int
    closes: int
    failing: bool


class _Poller:
    """The state of one polled market."""

    def __init__(self, key: FeedKey, live: bool) -> None:
        self.key = key
        self.subscribers: list[Subscriber] = []
        self.tracker = CloseTracker(key.timeframe, live=live)
        self.task: asyncio.Task[None] | None = None
        self.candle: dict[str, Any] | None = None
        self.ticker: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.polls = self.errors = self.closes = 0

    def publish(self, message: dict[str, Any]) -> None:
        for sub in self.subscribers:
            sub.put(message)

    def snapshot(self) -> list[dict[str, Any]]:
        return [m for m in (self.candle, self.ticker, self.error) if m is not None]

    def stats(self) -> PollerStats:
        return PollerStats(
            len(self.subscribers), self.polls, self.errors, self.closes, self.error is not None
        )


class MarketFeedHub:
    """One poller per market, shared by every subscriber of this process.

    Parameters
    ----------
    sources
        Builds the source of an exchange (called once per exchange, on first use).
    exchanges
        The exchanges subscribers may ask for; others are refused.
    poll_s
        Seconds between polls of a market.
    backoff_max_s
        Longest pause after failed polls (the pause doubles per failure in a row).
    history
        Candles read per poll (at least 2).
    max_pollers
        Markets polled at once at most.
    sleep
        The pause between polls (tests pass one they control).
    """

    def __init__(
        self,
        sources: Callable[[str], MarketDataSource],
        exchanges: Sequence[str],
        *,
        poll_s: float = 1.0,
        backoff_max_s: float = BACKOFF_MAX_S,
        history: int = HISTORY,
        max_pollers: int = MAX_POLLERS,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if poll_s <= 0:
            raise InvalidInputError("poll_s", "must be positive")
        if history < 2:
            raise InvalidInputError("history", "must be at least 2")
        self._build = sources
        self.exchanges = sorted(set(exchanges))
        self.poll_s = poll_s
        self.backoff_max_s = max(backoff_max_s, poll_s)
        self.history = history
        self.max_pollers = max_pollers
        self._sleep = sleep
        self._sources: dict[str, MarketDataSource] = {}
        self._pollers: dict[FeedKey, _Poller] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ sources

    def _check_loop(self) -> None:
        # Pollers and the sources' HTTP sessions belong to the loop that started them.
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise UnavailableError("the market feed runs on another event loop")

    def source(self, exchange: str) -> MarketDataSource:
        """Return the source of ``exchange``, built on first use.

        Raises
        ------
        InvalidInputError
            If ``exchange`` is not one of :attr:`exchanges`.
        """
        if exchange not in self.exchanges:
            raise InvalidInputError("exchange", "unknown exchange", allowed=self.exchanges)
        source = self._sources.get(exchange)
        if source is None:
            source = self._sources[exchange] = self._build(exchange)
        return source

    async def symbols(self, exchange: str) -> list[str]:
        """Return the symbols subscribers may ask for on ``exchange``.

        Raises
        ------
        InvalidInputError
            If ``exchange`` is unknown.
        UnavailableError
            If the source cannot list its symbols now (the message says why, without URLs).
        """
        self._check_loop()
        source = self.source(exchange)
        try:
            return await source.symbols()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ccxt's, the network's, the store's: the client learns why
            log.warning("market feed %s: listing symbols failed: %s", exchange, _describe(exc))
            raise UnavailableError(
                f"{exchange} market data is unavailable ({type(exc).__name__}); try again later"
            ) from exc

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, key: FeedKey, subscriber: Subscriber) -> list[dict[str, Any]]:
        """Add ``subscriber`` to ``key``'s poller (started if none runs); return the snapshot.

        The snapshot (latest closed candle, ticker, current error) is returned rather than
        queued, so the caller can queue its own acknowledgement first; queue it before the next
        ``await``, or a newer message may overtake it.  Subscribing twice is a no-op.

        Raises
        ------
        InvalidInputError
            If the exchange is unknown.
        UnavailableError
            If :attr:`max_pollers` markets are polled already.
        """
        self._check_loop()
        poller = self._pollers.get(key)
        if poller is None:
            source = self.source(key.exchange)
            if len(self._pollers) >= self.max_pollers:
                raise UnavailableError(
                    f"at most {self.max_pollers} markets are streamed at once; try again later"
                )
            poller = self._pollers[key] = _Poller(key, bool(getattr(source, "live", True)))
            poller.task = asyncio.get_running_loop().create_task(
                self._run(poller, source), name=f"market-feed {'/'.join(key)}"
            )
        if subscriber not in poller.subscribers:
            poller.subscribers.append(subscriber)
        return poller.snapshot()

    async def unsubscribe(self, key: FeedKey, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``key``; the last one leaving stops the poller."""
        poller = self._pollers.get(key)
        if poller is None or subscriber not in poller.subscribers:
            return
        poller.subscribers.remove(subscriber)
        if not poller.subscribers:
            # Gone from the map first: a subscriber arriving meanwhile starts a fresh poller.
            del self._pollers[key]
            await _stop(poller.task)

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from every market (a client went away)."""
        for key in [k for k, p in self._pollers.items() if subscriber in p.subscribers]:
            await self.unsubscribe(key, subscriber)

    def stats(self) -> dict[FeedKey, PollerStats]:
        """Return each running poller's counters."""
        return {key: poller.stats() for key, poller in self._pollers.items()}

    async def close(self) -> None:
        """Stop every poller and close the sources."""
        pollers, self._pollers = list(self._pollers.values()), {}
        for poller in pollers:
            await _stop(poller.task)
        sources, self._sources = list(self._sources.values()), {}
        self._loop = None
        for source in sources:
            try:
                await source.close()
            except Exception as exc:  # closing must not fail the server's shutdown
                log.warning("market feed: closing a source failed: %s", type(exc).__name__)

    # ------------------------------------------------------------------ polling

    async def _run(self, poller: _Poller, source: MarketDataSource) -> None:
        """Poll one market until cancelled; back off while the source fails."""
        key = poller.key
        failures = 0
        last_problem = ""
        while True:
            try:
                # The ticker first: its time is then no later than the candles', so a candle
                # it shows ended was read after it closed, with its final values.
                ticker = await source.fetch_ticker(key.symbol)
                candles = await source.fetch_ohlcv(key.symbol, key.timeframe, self.history)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ccxt's, the network's, the store's
                failures += 1
                poller.errors += 1
                delay = min(self.backoff_max_s, self.poll_s * 2**failures)
                problem = f"{type(exc).__name__}"
                poller.error = {
                    "type": "error",
                    "code": "source_error",
                    "message": f"{key.exchange} market data for {key.symbol} {key.timeframe} "
                    f"failed ({problem}); retrying in {delay:.1f} s",
                    "exchange": key.exchange,
                    "symbol": key.symbol,
                    "timeframe": key.timeframe,
                    "retryInSeconds": delay,
                }
                # Once per kind of failure: a dead source must not flood clients or the log.
                if problem != last_problem:
                    log.warning("market feed %s: %s", "/".join(key), _describe(exc))
                    poller.publish(poller.error)
                last_problem = problem
                await self._sleep(delay)
                continue
            failures, last_problem, poller.error = 0, "", None
            poller.polls += 1
            self._publish(poller, candles, ticker)
            await self._sleep(self.poll_s)

    def _publish(self, poller: _Poller, candles: list[Candle], ticker: Ticker | None) -> None:
        """Publish the candles that closed and the quote if it changed."""
        key = poller.key
        base = {"symbol": key.symbol, "exchange": key.exchange}
        now_ms = ticker.timestamp_ms if ticker is not None else None
        for candle in poller.tracker.observe(candles, now_ms):
            poller.candle = {"type": "candle", **base, "timeframe": key.timeframe, **_ohlcv(candle)}
            poller.closes += 1
            poller.publish(poller.candle)
        quote = _ticker(base, ticker, poller.candle)
        if quote is not None and quote != poller.ticker:
            poller.ticker = quote
            poller.publish(quote)


def _ohlcv(candle: Candle) -> dict[str, Any]:
    return {
        "timestamp": int(candle.timestamp_ms),
        "open": float(candle.open),
        "high": float(candle.high),
        "low": float(candle.low),
        "close": float(candle.close),
        "volume": float(candle.volume),
    }


def _ticker(
    base: dict[str, Any], ticker: Ticker | None, candle: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Return the ticker message: the source's quote, else the last closed candle's close."""
    if ticker is not None and ticker.last is not None:
        message: dict[str, Any] = {
            "type": "ticker",
            **base,
            "price": float(ticker.last),
            "timestamp": ticker.timestamp_ms,
        }
        if ticker.bid is not None:
            message["bid"] = float(ticker.bid)
        if ticker.ask is not None:
            message["ask"] = float(ticker.ask)
        return message
    if candle is None:
        return None
    return {"type": "ticker", **base, "price": candle["close"], "timestamp": candle["timestamp"]}


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _describe(exc: BaseException) -> str:
    """Return ``Type: message`` for the log, without ``user:password@`` in URLs."""
    return _USERINFO.sub("//***@", f"{type(exc).__name__}: {exc}")[:300]


__all__ = [
    "BACKOFF_MAX_S",
    "HISTORY",
    "MAX_POLLERS",
    "QUEUE_SIZE",
    "CloseTracker",
    "FeedKey",
    "MarketDataSource",
    "MarketFeedHub",
    "PollerStats",
    "Subscriber",
]
