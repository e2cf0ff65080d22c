"""Binance's kline market streams over one WebSocket path, pushed as the simulated clock moves.

``ws://<host>:<port>/ws`` (:func:`ws_url_for`) speaks Binance's spot market-stream protocol as
``ccxt.pro``'s ``binance`` uses it; the package documentation describes requests and events.
Connections and subscriptions are touched only in the server's event loop; :meth:`KlineStreams.kick`
is the one entry other threads use.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.sim.market import Bar, ReplayMarket
from cryptoorchestrator.platform.exchange.sim.wire import INTERVALS, kline_event
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms

log = logging.getLogger(__name__)

_WS_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS")
#: Binance pushes the forming candle of a kline stream every 2 s; the running clock does too.
_KLINE_UPDATE_S = 2.0
#: Most closed candles pushed per stream for one clock move (one /klines page).
_MAX_PUSH = 1000


def ws_url_for(base_url: str) -> str:
    """Return the kline stream URL of a simulator serving at ``base_url`` (``ws://host:port/ws``)."""
    root = base_url.rstrip("/")
    scheme, sep, rest = root.partition("://")
    if not sep:
        raise InvalidInputError("base_url", f"expected http(s)://host:port, got {base_url!r}")
    return ("wss" if scheme == "https" else "ws") + "://" + rest.split("/", 1)[0] + "/ws"


@dataclass
class _KlineSub:
    """One kline stream of one connection, and how far it has been told."""

    name: str
    market: ReplayMarket
    interval: str
    interval_ms: int
    #: Open time of the latest candle the client has (or needs no event for) as closed.
    closed_through: int
    #: Open time and simulated time of the last forming-candle event.
    forming: int | None = None
    sent_at: int | None = None


@dataclass(eq=False)  # hashed by identity: the streams keep a set of them
class _WsConnection:
    """A client's stream connection: its subscriptions and its queue of outgoing frames."""

    ws: web.WebSocketResponse
    request: web.Request
    subs: dict[str, _KlineSub] = field(default_factory=dict)
    # Events are queued synchronously as they are computed, so they leave in order whichever
    # task (request handler, clock timer, another thread's advance) computed them.
    outbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    def send(self, payload: Mapping[str, Any]) -> None:
        """Queue one JSON frame."""
        self.outbox.put_nowait(json.dumps(payload, separators=(",", ":")))

    def error(self, code: int, msg: str, rid: Any) -> None:
        """Queue a Binance error answer."""
        self.send({"error": {"code": code, "msg": msg}, "id": rid})


async def _ws_writer(conn: _WsConnection) -> None:
    while (text := await conn.outbox.get()) is not None:
        try:
            await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return  # the client went away; the handler removes the connection


class KlineStreams:
    """The kline stream connections of one simulator and the timer that feeds them.

    Parameters
    ----------
    markets
        Replayed markets keyed by Binance market id (``BTCUSDT``).
    clock
        Returns the simulated time and the clock's speed, read together.
    """

    def __init__(
        self, markets: Mapping[str, ReplayMarket], clock: Callable[[], tuple[int, float]]
    ) -> None:
        self.markets = markets
        self._clock = clock
        # Touched only in the server's loop, except _loop (read by any thread).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_WsConnection] = set()
        self._replan: asyncio.Event | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._pushed = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the clock timer in the running loop, which becomes the streams' loop."""
        self._loop = asyncio.get_running_loop()
        self._replan = asyncio.Event()
        self._clock_task = self._loop.create_task(self._run_clock(self._replan))

    async def stop(self) -> None:
        """Stop the timer and close every connection with 1001 (going away)."""
        task, self._clock_task = self._clock_task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        # Going away (1001) lets clients reconnect at once instead of timing out a dead socket.
        await self.close_connections(abort=False, message=b"server stopping")
        self._loop = None

    async def close_connections(self, *, abort: bool, message: bytes) -> int:
        """Close every connection (``abort``: cut the TCP connection); return how many."""
        conns = list(self._conns)
        for conn in conns:
            transport = conn.request.transport
            if abort and transport is not None:
                transport.abort()
                continue
            with suppress(Exception):  # a connection already gone is what we want anyway
                await asyncio.wait_for(
                    conn.ws.close(code=WSCloseCode.GOING_AWAY, message=message), timeout=2.0
                )
        return len(conns)

    def stats(self) -> dict[str, Any]:
        """Return open connections, subscriptions per stream and kline events pushed."""
        streams: Counter[str] = Counter()
        for conn in self._conns:
            streams.update(conn.subs.keys())
        return {
            "connections": len(self._conns),
            "streams": dict(sorted(streams.items())),
            "pushed": self._pushed,
        }

    # ------------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one stream connection (``GET /ws`` and any path below it) until it closes."""
        # A short close handshake: stop() must not wait 10 s for a client that went away.
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        conn = _WsConnection(ws, request)
        self._conns.add(conn)
        writer = asyncio.get_running_loop().create_task(_ws_writer(conn))
        try:
            # Binance's raw-stream URLs (/ws/btcusdt@kline_1h); ccxt's /ws/0 names no stream.
            named = [n for n in request.match_info.get("tail", "").split("/") if n]
            self._subscribe(conn, [n for n in named if self._kline_stream(n) is not None])
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._request(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.error(3, "Invalid JSON: expected a text frame", None)
        finally:
            self._conns.discard(conn)
            conn.outbox.put_nowait(None)
            try:
                await asyncio.wait_for(writer, timeout=1.0)
            except TimeoutError:
                pass  # wait_for cancelled the writer stuck on a client that stopped reading
        return ws

    def _request(self, conn: _WsConnection, text: str) -> None:
        """Answer one client request; replies and the events they cause go out in order."""
        try:
            req = json.loads(text)
        except ValueError:
            conn.error(3, "Invalid JSON: expected value at line 1 column 1", None)
            return
        if not isinstance(req, dict):
            conn.error(2, "Invalid request: expected a JSON object", None)
            return
        rid = req.get("id")
        valid_id = rid is None or (
            (isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0)
            or (isinstance(rid, str) and 0 < len(rid) <= 36 and rid.isalnum())
        )
        if not valid_id:
            conn.error(2, "Invalid request: request ID must be an unsigned integer", None)
            return
        method = req.get("method")
        if method not in _WS_METHODS:
            expected = ", ".join(f"`{m}`" for m in _WS_METHODS)
            conn.error(
                2, f"Invalid request: unknown variant `{method}`, expected one of {expected}", rid
            )
            return
        if method == "LIST_SUBSCRIPTIONS":
            conn.send({"result": sorted(conn.subs), "id": rid})
            return
        params = req.get("params")
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            conn.error(2, "Invalid request: params must be an array of stream names", rid)
            return
        bad = [p for p in params if self._kline_stream(p) is None]
        if bad:
            conn.error(2, f"Invalid request: unsupported stream `{bad[0]}`", rid)
            return
        conn.send({"result": None, "id": rid})
        if method == "SUBSCRIBE":
            self._subscribe(conn, params)
        else:
            for name in params:
                conn.subs.pop(name, None)

    def _kline_stream(self, name: str) -> tuple[ReplayMarket, str, int] | None:
        """Return the market, interval and its length of ``<symbol>@kline_<interval>``."""
        symbol, sep, kind = name.partition("@")
        if not sep or not kind.startswith("kline_") or symbol != symbol.lower():
            return None
        market = self.markets.get(symbol.upper())
        interval = kind.removeprefix("kline_")
        if market is None or interval not in INTERVALS:
            return None
        interval_ms = timeframe_to_ms(interval)
        if interval_ms < market.tf_ms or interval_ms % market.tf_ms:
            return None  # as GET /klines: no finer candles than the stored ones
        return market, interval, interval_ms

    def _subscribe(self, conn: _WsConnection, names: Sequence[str]) -> None:
        """Add streams to a connection and send each its current candle."""
        now = self._clock()[0]
        for name in names:
            if name in conn.subs:
                continue
            parsed = self._kline_stream(name)
            assert parsed is not None  # checked by the caller
            market, interval, interval_ms = parsed
            bars = market.klines(interval_ms, now, limit=1)
            # Candles before the current one are history: REST tells them, the stream does not.
            sub = _KlineSub(name, market, interval, interval_ms, closed_through=-1)
            if bars:
                bar = bars[-1]
                sub.closed_through = bar.open_time if bar.closed else bar.open_time - 1
                if not bar.closed:
                    sub.forming, sub.sent_at = bar.open_time, now
                self._push(conn, sub, bar, now)
            conn.subs[name] = sub
        if self._replan is not None:
            self._replan.set()  # a new stream may close before the timer's current plan

    def _push(self, conn: _WsConnection, sub: _KlineSub, bar: Bar, now: int) -> None:
        conn.send(kline_event(sub.market.spec, sub.interval, sub.interval_ms, bar, now))
        self._pushed += 1

    # ------------------------------------------------------------------ clock moves

    def kick(self) -> None:
        """Have the server's loop push what the clock just moved past (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._wake()
            return
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody is listening
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._pump()
        if self._replan is not None:
            self._replan.set()

    def _pump(self) -> None:
        """Queue, for every subscription, the candles closed since its last event."""
        if not self._conns:
            return
        now = self._clock()[0]
        # One /klines computation per stream and pump, however many connections share it.
        pages: dict[tuple[str, int], list[Bar]] = {}
        for conn in list(self._conns):
            for sub in list(conn.subs.values()):
                # Stored candles opened since the last close it was told: an upper bound of the
                # intervals to look at that stays small past the end of the data.
                market = sub.market
                opened = market.visible_count(now) - market.visible_count(sub.closed_through)
                span = max(2, min(_MAX_PUSH, opened + 2))
                key = (sub.market.spec.market_id, sub.interval_ms)
                page = pages.get(key)
                if page is None or len(page) < span:
                    page = pages[key] = market.klines(sub.interval_ms, now, limit=span)
                for bar in page:
                    if bar.open_time <= sub.closed_through:
                        continue
                    if bar.closed:
                        sub.closed_through = bar.open_time
                    elif bar.open_time == sub.forming and now == sub.sent_at:
                        continue  # nothing new about the forming candle
                    else:
                        sub.forming, sub.sent_at = bar.open_time, now
                    self._push(conn, sub, bar, now)

    async def _run_clock(self, replan: asyncio.Event) -> None:
        """With the clock running, sleep until the next candle closes (or 2 s) and push."""
        while True:
            try:
                await asyncio.wait_for(replan.wait(), timeout=self._next_push_s())
                replan.clear()  # clock, speed or streams changed: plan again
            except TimeoutError:
                try:
                    self._pump()
                except Exception:  # a bad push must not stop the clock of every stream
                    log.exception("kline stream push failed")

    def _next_push_s(self) -> float | None:
        """Return the real seconds until a stream needs an event; None while the clock stands."""
        now, speed = self._clock()
        subs = [s for c in self._conns for s in c.subs.values()]
        if speed <= 0 or not subs:
            return None
        closes = [s.forming + s.interval_ms for s in subs if s.forming is not None]
        due_ms = min(closes, default=now) - now
        # +1 ms simulated: the clock truncates to whole ms, and waking just before the close
        # would push the same forming candle twice.
        return min(_KLINE_UPDATE_S, max(0.0, (due_ms + 1) / speed / 1000.0))
