"""Pushed candle closes: an exchange's kline stream (ccxt.pro) as a wake-up signal for bots.

Polling REST for the latest candle learns of a close up to one poll interval late and costs a
request per poll.  An exchange's kline stream says it within milliseconds.  :class:`CandleFeed`
watches that stream with ccxt.pro's own ``watch_ohlcv`` (no WebSocket code of ours on the
trading path) and wakes whoever waits for a close; the woken bot still reads the closed candles
over REST, so its decisions are exactly those of polling, only earlier.  A feed that cannot
stream (the exchange has no ``watchOHLCV``, the connection is down) just lets waits time out,
and callers poll as before.

One feed per (exchange id, ``api_url``) and event loop, shared by the bots of a process::

    feed = CandleFeed.acquire("binance", api_url)          # ref-counted
    feed.watch("BTC/USDT", "1h")                           # idempotent; wait_closed does it too
    closed = await feed.wait_closed("BTC/USDT", "1h", after_ms=last_open, timeout=poll_s)
    if closed is None:
        ...                                                # no push in time: poll REST
    await feed.close()                                     # the last user closes the client

How a close is recognised
-------------------------
ccxt hands back candles ``[open time, o, h, l, c, v]`` without Binance's "closed" flag, so the
feed relies only on what a kline stream cannot get wrong: a candle exists only once its interval
has begun, so a candle opening at ``t`` means every candle that opened before it has closed.
The newest candle seen, ``t``, thus closes ``t - timeframe`` and everything before it (for
calendar timeframes, ``1M``, only candles actually seen before ``t``).  Binance pushes a closing
candle with ``x: true`` and then the next one; the feed wakes on the second, which the exchange
simulator sends right after the first.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.budget_client import registry as budget_registry
from cryptoorchestrator.platform.exchange.ccxt_factory import build_ccxt_client
from cryptoorchestrator.platform.model.symbols import normalize_symbol
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms
from cryptoorchestrator.platform.sharing import LoopShares

log = logging.getLogger(__name__)

#: Pause after a failed watch; it doubles per failure in a row up to the maximum.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0

_USERINFO = re.compile(r"//[^/@\s]+@")


@dataclass(frozen=True)
class StreamStats:
    """Counters of one (symbol, timeframe) stream, for tests and benchmarks.

    Attributes
    ----------
    connected
        Whether the stream delivered candles since its last failure.
    events
        Updates received (``watch_ohlcv`` answers).
    closes
        Times a new candle close was recognised (the first answer's baseline not counted).
    errors
        Failed ``watch_ohlcv`` calls (disconnects, refused connections, subscription errors).
    reconnects
        Times candles flowed again after a failure.
    last_closed_ms
        Open time of the latest candle known closed; None before the first update.
    """

    connected: bool
    events: int
    closes: int
    errors: int
    reconnects: int
    last_closed_ms: int | None


class _Stream:
    """The state of one watched (symbol, timeframe)."""

    def __init__(self, symbol: str, timeframe: str) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        # Fixed-length timeframes only: a month's candles differ in length.
        try:
            self.tf_ms: int | None = timeframe_to_ms(timeframe)
        except InvalidInputError:
            self.tf_ms = None
        self.task: asyncio.Task[None] | None = None
        # Delivered since its last failure (a failure since the last delivery: not connected
        # and errors counted).
        self.connected = False
        self.events = self.closes = self.errors = self.reconnects = 0
        self.newest_open: int | None = None
        self.last_closed: int | None = None
        self.changed = asyncio.Event()

    def observe(self, candles: Sequence[Sequence[Any]]) -> None:
        """Take one ``watch_ohlcv`` answer; wake the waiters if a later candle is now closed."""
        opens = sorted({int(row[0]) for row in candles if row and row[0] is not None})
        if not opens:
            return
        newest = opens[-1]
        closed: list[int] = []
        if self.tf_ms is not None:
            closed.append(newest - self.tf_ms)
        if len(opens) > 1:
            closed.append(opens[-2])  # followed by a newer candle in the same answer
        if self.newest_open is not None and self.newest_open < newest:
            closed.append(self.newest_open)  # the candle seen forming has been followed
        if self.newest_open is None or newest > self.newest_open:
            self.newest_open = newest
        latest = max(closed, default=None)
        if latest is None or (self.last_closed is not None and latest <= self.last_closed):
            return
        if self.last_closed is not None:
            self.closes += 1
        self.last_closed = latest
        self.wake()

    def wake(self) -> None:
        """Release every current waiter; later waiters wait on a fresh event."""
        self.changed.set()
        self.changed = asyncio.Event()

    def stats(self) -> StreamStats:
        """Return a snapshot of the counters."""
        return StreamStats(
            connected=self.connected,
            events=self.events,
            closes=self.closes,
            errors=self.errors,
            reconnects=self.reconnects,
            last_closed_ms=self.last_closed,
        )


class CandleFeed:
    """Candle closes pushed by one exchange's kline stream, for the bots of one event loop.

    Parameters
    ----------
    client
        A ``ccxt.pro`` exchange (it is closed with the feed), or None for an exchange that
        cannot stream: then nothing is ever connected and every wait times out.
    name
        How logs name the feed (no credentials).

    Use :meth:`acquire` to share one feed per (exchange, ``api_url``) and loop.
    """

    # Per event loop: a ccxt client's sessions belong to the loop that opened them.
    _shares: LoopShares[tuple[str, str | None], CandleFeed] = LoopShares()

    def __init__(self, client: Any | None, *, name: str = "") -> None:
        self.client = client
        self.name = _redact(name or str(getattr(client, "id", "exchange")))
        has = getattr(client, "has", None) or {}
        self.supported = client is not None and bool(has.get("watchOHLCV"))
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._closed = False
        self._key: tuple[str, str | None] | None = None  # set when shared by acquire()

    @classmethod
    def acquire(
        cls,
        exchange: str,
        api_url: str | None = None,
        *,
        build: Callable[[], Any | None] | None = None,
    ) -> CandleFeed:
        """Return this loop's feed for ``exchange`` at ``api_url``, created on first use.

        Parameters
        ----------
        exchange
            ccxt's exchange id (``binance``), as stored on the exchange account.
        api_url
            The account's ``api_url`` (the simulator, a testnet); None: ccxt.pro's own URLs.
        build
            Builds the ccxt.pro client instead of the platform's factory (tests).

        Each call takes a share that :meth:`close` gives back.
        """
        key = (exchange, api_url or None)

        def make() -> CandleFeed:
            client = build() if build is not None else _stream_client(exchange, api_url)
            feed = cls(client, name=f"{exchange}@{api_url or 'default'}")
            feed._key = key
            return feed

        return cls._shares.acquire(key, make)

    # ------------------------------------------------------------------ watching

    def watch(self, symbol: str, timeframe: str) -> None:
        """Start watching ``symbol``'s ``timeframe`` candles (once; later calls do nothing).

        Raises
        ------
        RuntimeError
            If the feed is closed.
        """
        self._stream(symbol, timeframe)

    def connected(self, symbol: str, timeframe: str) -> bool:
        """Return whether the stream delivered candles since its last failure."""
        stream = self._streams.get((normalize_symbol(symbol), timeframe))
        return stream is not None and stream.connected

    def last_closed(self, symbol: str, timeframe: str) -> int | None:
        """Return the open time of the latest candle known closed (None: none known yet)."""
        stream = self._streams.get((normalize_symbol(symbol), timeframe))
        return None if stream is None else stream.last_closed

    def stats(self, symbol: str, timeframe: str) -> StreamStats:
        """Return the counters of one stream (all zero if it is not watched)."""
        stream = self._streams.get((normalize_symbol(symbol), timeframe))
        if stream is None:
            return StreamStats(False, 0, 0, 0, 0, None)
        return stream.stats()

    @property
    def events(self) -> int:
        """Return the updates received over every stream."""
        return sum(s.events for s in self._streams.values())

    @property
    def reconnects(self) -> int:
        """Return the recoveries after a failure over every stream."""
        return sum(s.reconnects for s in self._streams.values())

    async def wait_closed(
        self, symbol: str, timeframe: str, after_ms: int, timeout: float | None
    ) -> int | None:
        """Wait until a candle opening after ``after_ms`` is known closed; None on timeout.

        Returns at once if one already is.  Starts watching the stream if nobody did.

        Parameters
        ----------
        after_ms
            Open time of the last candle the caller has (a closed candle opening later is what
            it waits for).
        timeout
            Seconds to wait at most (None: no limit); then the caller polls REST as without a
            feed.

        Returns
        -------
        int or None
            The open time of the latest candle known closed (``> after_ms``), or None when none
            closed within ``timeout`` or the feed was closed meanwhile.
        """
        stream = self._stream(symbol, timeframe)
        deadline = None
        if timeout is not None:
            deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        try:
            async with asyncio.timeout_at(deadline):
                while stream.last_closed is None or stream.last_closed <= after_ms:
                    if self._closed:
                        return None
                    await stream.changed.wait()
        except TimeoutError:
            return None
        return stream.last_closed

    def _stream(self, symbol: str, timeframe: str) -> _Stream:
        if self._closed:
            raise RuntimeError(f"candle feed {self.name} is closed")
        key = (normalize_symbol(symbol), timeframe)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(*key)
        if self.supported and (stream.task is None or stream.task.done()):
            stream.task = asyncio.get_running_loop().create_task(
                self._run(stream), name=f"candle-feed {self.name} {key[0]} {key[1]}"
            )
        return stream

    async def _run(self, stream: _Stream) -> None:
        """Watch one stream forever: reconnect with backoff after every failure."""
        assert self.client is not None
        delay = BACKOFF_MIN_S
        last_problem = ""
        while True:
            try:
                candles = await self.client.watch_ohlcv(stream.symbol, stream.timeframe)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ccxt's NetworkError, aiohttp's own, a refused subscribe
                stream.connected = False
                stream.errors += 1
                problem = _redact(f"{type(exc).__name__}: {exc}")[:300]
                # Once per kind of failure: a dead exchange must not fill the log every 5 s.
                level = logging.WARNING if problem != last_problem else logging.DEBUG
                log.log(
                    level,
                    "candle feed %s %s %s: %s; retrying in %.1f s",
                    self.name,
                    stream.symbol,
                    stream.timeframe,
                    problem,
                    delay,
                )
                last_problem = problem
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
                # Our backoff paces the dials; ccxt's own per-URL one grows to 30 s and would
                # hold a recovered stream back that long.
                dial_backoff = getattr(self.client, "ws_dial_backoff", None)
                if isinstance(dial_backoff, dict):
                    dial_backoff.clear()
                continue
            if not stream.connected and stream.errors:
                stream.reconnects += 1
                log.info(
                    "candle feed %s %s %s: streaming again",
                    self.name,
                    stream.symbol,
                    stream.timeframe,
                )
            delay = BACKOFF_MIN_S
            last_problem = ""
            stream.connected = True
            stream.events += 1
            stream.observe([*candles, *self._cached(stream)])

    def _cached(self, stream: _Stream) -> list[Any]:
        """Return the newest rows of ccxt's candle cache of ``stream``.

        ccxt resolves a watch only while a call is waiting: a frame handled in the same batch
        as the one that woke us (Binance's closed candle, then the next one) is in the cache
        but in no answer.
        """
        try:
            ohlcvs = getattr(self.client, "ohlcvs", None) or {}
            store = ohlcvs.get(stream.symbol, {}).get(stream.timeframe)
            return list(store[-3:]) if store else []
        except (AttributeError, TypeError):  # not ccxt's cache layout: the answers suffice
            return []

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Give back one share; the last one stops the watchers and closes the client."""
        last = self._key is None or self._shares.release(self._key, self)
        if not last or self._closed:
            return
        self._closed = True
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in self._streams.values():
            stream.connected = False
            stream.wake()  # waiters see the feed closed and return None
        if self.client is not None:
            try:
                await self.client.close()
            except Exception as exc:  # closing must not fail a bot's shutdown
                log.warning("candle feed %s: close failed: %s", self.name, type(exc).__name__)


def _stream_client(exchange: str, api_url: str | None) -> Any | None:
    """Return a public ``ccxt.pro`` client of ``exchange`` at ``api_url``; None if none can be.

    Configured as the account's REST client is (:func:`~cryptoorchestrator.platform.exchange.
    ccxt_factory.build_ccxt_client`), stream roots included.  An exchange ccxt.pro does not
    know, or a URL it refuses, leaves the feed without a stream: its callers poll REST.
    """
    try:
        client = build_ccxt_client(exchange, api_url, kind="pro")
    except InvalidInputError:
        return None
    # Its REST calls (loading markets) spend the process's shared request budget, if any.
    budget_registry.attach(client, exchange, api_url)
    return client


def _redact(text: str) -> str:
    """Drop ``user:password@`` from URLs in ``text``."""
    return _USERINFO.sub("//***@", text)
