"""WebSockets: ``/ws/market-data`` (public) and ``/ws/bots`` (authenticated).

Market data protocol (JSON text frames)::

    -> {"type": "subscribe", "symbols": ["BTC/USDT"]}      optional: "exchange", "timeframe"
    <- {"type": "subscribed", "symbols": ["BTC/USDT"]}
    <- {"type": "candle", "symbol": "BTC/USDT", "exchange": "binance", "timeframe": "1h",
        "timestamp": <open time, ms>, "open", "high", "low", "close", "volume"}
    <- {"type": "ticker", "symbol": "BTC/USDT", "exchange": "binance", "price": ...,
        "timestamp": ..., "bid"?, "ask"?}
    -> {"type": "unsubscribe", "symbols": ["BTC/USDT"]}   <- {"type": "unsubscribed", ...}
    -> {"type": "ping"}                                  <- {"type": "pong"}
    -> anything malformed                                <- {"type": "error", "code", "message"}
    -> a symbol without market data  <- {"type": "error", "code": "unknown_symbol", "message",
                                         "validSymbols": ["BTC/USDT", ...]}
    -> an exchange or timeframe not served <- {"type": "error", "code": "unknown_exchange" |
                                         "invalid_timeframe", "validExchanges" | "validTimeframes"}

The exchange defaults to ``CRYPTOORCH_API_MARKET_EXCHANGE`` and the timeframe to
``CRYPTOORCH_API_MARKET_TIMEFRAME``.  On subscribing, a client gets its market's latest closed
candle and ticker; then a ``candle`` as each candle closes and a ``ticker`` whenever a poll
brings a new quote.  The data come from the feed's hub
(:mod:`~cryptoorchestrator.platform.services.market_feed`): one poller per exchange, symbol and
timeframe, shared by every client, reading the exchange through ccxt (the demo's simulator) or
the market-data store (``CRYPTOORCH_MARKET_FEED``).  When the source fails, subscribers get
``{"type": "error", "code": "source_error", "exchange", "symbol", "timeframe", "message",
"retryInSeconds"}`` and the poller backs off.  A client that reads too slowly loses its oldest
queued messages and then gets ``{"type": "error", "code": "slow_consumer", "dropped": n}``.
Sockets silent for longer than the idle timeout are closed (code 1001), so clients should ping.

``/ws/bots`` authenticates with a first message ``{"type": "auth", "token": ...}`` or the
subprotocols ``Sec-WebSocket-Protocol: bearer, <access token>`` (the server selects ``bearer``);
``?token=<access token>`` still works but puts the token in URLs, and so in proxies' logs (ours
and the server's are redacted).  It then receives ``{"botId", "type": "status"|"order"|"fill",
...}`` events of the user's own bots from the event hub.

Limits (:class:`~cryptoorchestrator.api.config.ApiOptions`): a message larger than
``ws_max_message_bytes`` closes the socket with 1009; JSON nested deeper than ``ws_max_depth``
is answered ``{"type": "error", "code": "too_deep"}`` and the socket stays open; beyond
``ws_max_per_ip`` sockets per client address or ``ws_max_per_user`` per user a new socket is
closed with 1008 and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.api.context import AppContext
from cryptoorchestrator.api.deps import ContextDep
from cryptoorchestrator.api.events import EventHub, SocketSlots
from cryptoorchestrator.api.feeds import MAX_LISTED, SYMBOLS_ROUTE, MarketFeed, unknown_symbol
from cryptoorchestrator.platform.errors import (
    CryptoOrchError,
    UnauthorizedError,
    UnavailableError,
)
from cryptoorchestrator.platform.model import TIMEFRAMES, normalize_symbol
from cryptoorchestrator.platform.services.market_feed import FeedKey, Subscriber

router = APIRouter(tags=["websockets"])
MAX_SYMBOLS = 50


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


#: A JSON string (escapes included): brackets inside one do not nest anything.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
#: Subprotocol a client offers with its token: ``Sec-WebSocket-Protocol: bearer, <token>``.
BEARER_PROTOCOL = "bearer"


class _MessageError(Exception):
    """A message the socket answers with an error (and stays open)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _TooLarge(Exception):
    """A message over ``ws_max_message_bytes``: the socket is closed with 1009."""


def _too_deep(text: str, max_depth: int) -> bool:
    """Return whether ``text`` nests arrays/objects deeper than ``max_depth``.

    Counting brackets first keeps ordinary messages to two C-speed scans; only a message with
    more brackets than the limit is walked, outside its strings.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for char in _JSON_STRING.sub("", text):
        if char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _parse(text: str, max_depth: int) -> dict[str, Any] | None:
    """Parse a JSON object of bounded depth; None for valid JSON that is not an object.

    Raises
    ------
    _MessageError
        Not JSON (``malformed``), or nested deeper than ``max_depth`` (``too_deep``).
    """
    if _too_deep(text, max_depth):
        raise _MessageError("too_deep", f"JSON nested deeper than {max_depth} levels")
    try:
        message = json.loads(text)
    except RecursionError as exc:  # the depth check should make this unreachable
        raise _MessageError("too_deep", f"JSON nested deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise _MessageError("malformed", "send a JSON object with a 'type'") from exc
    return message if isinstance(message, dict) else None


async def _receive(ws: WebSocket, options: ApiOptions) -> dict[str, Any] | None:
    """Receive the next message as a JSON object (None: a binary frame or not an object).

    Raises
    ------
    WebSocketDisconnect
        The client went away.
    _TooLarge
        The message exceeds ``ws_max_message_bytes`` (uvicorn enforces the same bound on the
        wire under ``cryptoorch serve``; this holds under any server).
    _MessageError
        Malformed or too deeply nested JSON.
    """
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    limit = options.ws_max_message_bytes
    text = message.get("text")
    if text is None:
        if len(message.get("bytes") or b"") > limit:
            raise _TooLarge
        return None
    # A character is at least one byte: only a text that could exceed the limit is encoded.
    if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
        raise _TooLarge
    return _parse(text, options.ws_max_depth)


class _MarketSession:
    """One ``/ws/market-data`` client: its subscriptions and its queue in the feed's hub.

    Every message to the client (replies included) goes through the client's bounded queue
    and one sender task, so a reply never overtakes the candles before it and a slow client
    loses its own oldest messages, never anyone else's time.
    """

    def __init__(self, feed: MarketFeed, options: ApiOptions) -> None:
        self.feed = feed
        self.exchange = options.market_exchange
        self.timeframe = options.market_timeframe
        self.queue = Subscriber()
        self.keys: set[FeedKey] = set()

    def send(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the client (never waits)."""
        self.queue.put(message)

    async def reply(self, message: dict[str, Any]) -> None:
        """Queue ``message`` (the receive loop's error replies)."""
        self.send(message)

    async def forward(self, ws: WebSocket) -> None:
        """Send the queued messages to the client, forever."""
        while True:
            await ws.send_json(await self.queue.get())

    async def close(self) -> None:
        """Leave every market (the last subscriber of one stops its poller)."""
        await self.feed.unsubscribe_all(self.queue)
        self.keys.clear()

    async def _valid(self, exchange: str) -> list[str]:
        try:
            return await self.feed.symbols(exchange)
        except UnavailableError:
            return []

    @staticmethod
    def _unknown(code: str, text: str, exchange: str, valid: list[str]) -> dict[str, Any]:
        """The error for a symbol without market data, naming the symbols that have some."""
        error = unknown_symbol(text, valid, listed_by=f"{SYMBOLS_ROUTE}?exchange={exchange}")
        message = _error(code, error.reason)
        message["validSymbols"] = valid[:MAX_LISTED]
        return message

    def _market(self, message: dict[str, Any]) -> tuple[str, str] | dict[str, Any]:
        """Return the message's (exchange, timeframe), defaults filled in, or the error."""
        exchange = message.get("exchange", self.exchange)
        if not isinstance(exchange, str) or exchange not in self.feed.exchanges:
            error = _error("unknown_exchange", "unknown exchange; see validExchanges")
            error["validExchanges"] = self.feed.exchanges
            return error
        timeframe = message.get("timeframe", self.timeframe)
        if not isinstance(timeframe, str) or timeframe not in TIMEFRAMES:
            error = _error("invalid_timeframe", "unknown timeframe; see validTimeframes")
            error["validTimeframes"] = list(TIMEFRAMES)
            return error
        return exchange, timeframe

    async def handle(self, message: dict[str, Any] | None) -> None:
        """Answer one client message (ping, subscribe, unsubscribe, or an error)."""
        if message is None:
            self.send(_error("malformed", "send a JSON object with a 'type'"))
            return
        kind = message.get("type")
        if kind == "ping":
            self.send({"type": "pong"})
            return
        if kind not in ("subscribe", "unsubscribe"):
            self.send(
                _error("unknown_type", f"unknown type {kind!r}; use subscribe, unsubscribe, ping")
            )
            return
        raw = message.get("symbols")
        if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
            self.send(_error("malformed", "'symbols' must be a non-empty list of strings"))
            return
        market = self._market(message)
        if isinstance(market, dict):
            self.send(market)
            return
        exchange, timeframe = market
        symbols = []
        for text in raw:
            try:
                symbols.append(normalize_symbol(text))
            except CryptoOrchError:
                valid = await self._valid(exchange)
                self.send(self._unknown("invalid_symbol", text, exchange, valid))
        if kind == "unsubscribe":
            for symbol in symbols:
                key = FeedKey(exchange, symbol, timeframe)
                self.keys.discard(key)
                await self.feed.unsubscribe(key, self.queue)
            self.send({"type": "unsubscribed", "symbols": symbols})
            return
        await self._subscribe(exchange, timeframe, symbols)

    async def _subscribe(self, exchange: str, timeframe: str, symbols: list[str]) -> None:
        if not symbols:
            return
        try:
            valid = await self.feed.symbols(exchange)
        except UnavailableError as exc:
            self.send(_error("source_unavailable", str(exc)))
            return
        known = []
        for symbol in symbols:
            if symbol in valid:
                known.append(symbol)
            else:
                self.send(self._unknown("unknown_symbol", symbol, exchange, valid))
        keys = [FeedKey(exchange, symbol, timeframe) for symbol in known]
        if len(self.keys | set(keys)) > MAX_SYMBOLS:
            self.send(_error("too_many", f"at most {MAX_SYMBOLS} symbols per connection"))
            return
        # No await from here on: each market's snapshot is queued right after "subscribed",
        # before its poller can queue anything newer.
        subscribed: list[str] = []
        snapshots: list[dict[str, Any]] = []
        for key in keys:
            try:
                snapshots.extend(self.feed.subscribe(key, self.queue))
            except CryptoOrchError as exc:  # the hub's cap on markets streamed at once
                self.send(_error(exc.code, str(exc)))
                continue
            self.keys.add(key)
            subscribed.append(key.symbol)
        if subscribed:
            self.send({"type": "subscribed", "symbols": subscribed})
        for snapshot in snapshots:
            self.send(snapshot)


async def _receive_loop(
    ws: WebSocket,
    options: ApiOptions,
    on_message: Callable[[dict[str, Any] | None], Awaitable[None]],
    reply: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Hand each message to ``on_message`` until the client leaves, idles or oversends."""
    while True:
        try:
            message = await asyncio.wait_for(_receive(ws, options), options.ws_idle_timeout_s)
        except TimeoutError:
            await ws.close(code=1001, reason="idle timeout; send ping messages")
            return
        except _TooLarge:
            limit = options.ws_max_message_bytes
            await ws.close(code=1009, reason=f"message larger than {limit} bytes")
            return
        except _MessageError as exc:
            await reply(_error(exc.code, str(exc)))
            continue
        await on_message(message)


async def _refuse(ws: WebSocket, reason: str) -> None:
    """Accept only to close with 1008 and ``reason`` (a refused handshake carries none)."""
    await ws.accept()
    await ws.close(code=1008, reason=reason)


def _client(ws: WebSocket, context: AppContext) -> str:
    return context.proxies.client_ip(ws.scope) or "unknown"


@router.websocket("/ws/market-data")
async def market_data(ws: WebSocket, context: ContextDep) -> None:
    """Stream candles and tickers of the subscribed symbols."""
    slots = context.ws_slots
    ip = _client(ws, context)
    if not slots.take_ip(ip):
        await _refuse(ws, f"too many WebSockets from this address (at most {slots.per_ip})")
        return
    try:
        await ws.accept()
        session = _MarketSession(context.feed, context.options)
        sender = asyncio.create_task(session.forward(ws))
        try:
            await _receive_loop(ws, context.options, session.handle, session.reply)
        except WebSocketDisconnect:
            pass
        finally:
            await session.close()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
    finally:
        slots.release_ip(ip)


def _authenticate(context: AppContext, token: str) -> int:
    # A socket lives long: always ask the database (user, session, epoch), never the cache.
    return context.identity.authenticate(token, fresh=True)


def _offered_token(ws: WebSocket) -> tuple[bool, str | None]:
    """Whether the client offered the ``bearer`` subprotocol, and the token offered with it
    (``Sec-WebSocket-Protocol: bearer, <token>``)."""
    offered = [p.strip() for p in ws.scope.get("subprotocols") or ()]
    if BEARER_PROTOCOL not in offered:
        return False, None
    rest = [p for p in offered if p != BEARER_PROTOCOL]
    return True, rest[0] if rest else None


@router.websocket("/ws/bots")
async def bot_events(ws: WebSocket, context: ContextDep) -> None:
    """Stream status changes, orders and fills of the authenticated user's bots."""
    slots = context.ws_slots
    ip = _client(ws, context)
    if not slots.take_ip(ip):
        await _refuse(ws, f"too many WebSockets from this address (at most {slots.per_ip})")
        return
    try:
        await _bot_events(ws, context, slots)
    finally:
        slots.release_ip(ip)


async def _bot_events(ws: WebSocket, context: AppContext, slots: SocketSlots) -> None:
    options = context.options
    bearer, token = _offered_token(ws)
    # A browser completes the handshake only if the server selects a subprotocol it offered:
    # select "bearer", never echo the token.
    await ws.accept(subprotocol=BEARER_PROTOCOL if bearer else None)
    if token is None:
        token = ws.query_params.get("token")
    try:
        if token is None:
            first = await asyncio.wait_for(_receive(ws, options), 10.0)
            token = first.get("token") if first and first.get("type") == "auth" else None
            if not isinstance(token, str):
                raise UnauthorizedError("authenticate first: {'type': 'auth', 'token': ...}")
        user_id = await run_in_threadpool(_authenticate, context, token)
    except (UnauthorizedError, TimeoutError, _MessageError) as exc:
        message = "authentication timed out" if isinstance(exc, TimeoutError) else str(exc)
        await ws.send_json(_error("unauthorized", message))
        await ws.close(code=4401, reason=message[:120])
        return
    except _TooLarge:
        await ws.close(code=1009, reason=f"message larger than {options.ws_max_message_bytes}")
        return
    except WebSocketDisconnect:
        return
    if not slots.take_user(user_id):
        reason = f"too many WebSockets for this user (at most {slots.per_user})"
        await ws.send_json(_error("too_many_connections", reason))
        await ws.close(code=1008, reason=reason)
        return
    try:
        await _stream_events(ws, context.event_hub, options, user_id)
    finally:
        slots.release_user(user_id)


async def _stream_events(ws: WebSocket, hub: EventHub, options: ApiOptions, user_id: int) -> None:
    sub = hub.subscribe(user_id)
    await ws.send_json({"type": "authenticated", "userId": user_id})
    lock = asyncio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await ws.send_json(message)

    async def forward() -> None:
        while True:
            await send(await sub.queue.get())

    async def on_message(message: dict[str, Any] | None) -> None:
        await send(
            {"type": "pong"}
            if message is not None and message.get("type") == "ping"
            else _error("malformed", "only {'type': 'ping'} is accepted here")
        )

    forwarder = asyncio.create_task(forward())
    try:
        await _receive_loop(ws, options, on_message, send)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await forwarder
