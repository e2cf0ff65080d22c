"""WebSockets: ``/ws/market-data`` (public) and ``/ws/bots`` (authenticated).

Market data protocol (JSON text frames)::

    -> {"type": "subscribe", "symbols": ["BTC/USDT"]}
    <- {"type": "subscribed", "symbols": ["BTC/USDT"]}
    <- {"type": "candle", "symbol": "BTC/USDT", "timeframe": "1h", "timestamp": ..., "open": ...}
    <- {"type": "ticker", "symbol": "BTC/USDT", "price": ..., "timestamp": ...}
    -> {"type": "unsubscribe", "symbols": ["BTC/USDT"]}   <- {"type": "unsubscribed", ...}
    -> {"type": "ping"}                                  <- {"type": "pong"}
    -> anything malformed                                <- {"type": "error", "code", "message"}

A candle is sent on subscribe and again whenever the feed has a newer one (polled).  Sockets
silent for longer than the idle timeout are closed (code 1001), so clients should ping.

``/ws/bots`` authenticates with ``?token=<access token>`` or a first message
``{"type": "auth", "token": ...}``, then receives ``{"botId", "type": "status"|"order"|"fill",
...}`` events of the user's own bots from the event hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from cryptoorchestrator.api.events import EventHub
from cryptoorchestrator.api.feeds import MarketFeed
from cryptoorchestrator.api.identity import Identity
from cryptoorchestrator.platform.errors import CryptoOrchError, UnauthorizedError
from cryptoorchestrator.platform.model import normalize_symbol

router = APIRouter(tags=["websockets"])
MAX_SYMBOLS = 50


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def _parse(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


class _MarketSession:
    def __init__(self, ws: WebSocket, feed: MarketFeed, poll_s: float) -> None:
        self.ws = ws
        self.feed = feed
        self.poll_s = poll_s
        self.symbols: set[str] = set()
        self.sent: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_json(message)

    async def push(self) -> None:
        for symbol in sorted(self.symbols):
            candle = await run_in_threadpool(self.feed.latest, symbol)
            if candle is None or self.sent.get(symbol) == candle["timestamp"]:
                continue
            if symbol not in self.symbols:  # unsubscribed while we read
                continue
            self.sent[symbol] = candle["timestamp"]
            base = {"symbol": symbol, "exchange": self.feed.exchange}
            await self.send({"type": "candle", **base, "timeframe": self.feed.timeframe, **candle})
            await self.send(
                {
                    "type": "ticker",
                    **base,
                    "price": candle["close"],
                    "timestamp": candle["timestamp"],
                }
            )

    async def poll(self) -> None:
        while True:
            await self.push()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_s)
            self.wake.clear()

    async def handle(self, message: dict[str, Any] | None) -> None:
        if message is None:
            await self.send(_error("malformed", "send a JSON object with a 'type'"))
            return
        kind = message.get("type")
        if kind == "ping":
            await self.send({"type": "pong"})
            return
        if kind not in ("subscribe", "unsubscribe"):
            await self.send(
                _error("unknown_type", f"unknown type {kind!r}; use subscribe, unsubscribe, ping")
            )
            return
        raw = message.get("symbols")
        if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
            await self.send(_error("malformed", "'symbols' must be a non-empty list of strings"))
            return
        symbols = []
        for text in raw:
            try:
                symbols.append(normalize_symbol(text))
            except CryptoOrchError as exc:
                await self.send(_error("invalid_symbol", str(exc)))
        if kind == "unsubscribe":
            self.symbols.difference_update(symbols)
            for s in symbols:
                self.sent.pop(s, None)
            await self.send({"type": "unsubscribed", "symbols": symbols})
            return
        known = []
        for symbol in symbols:
            if await run_in_threadpool(self.feed.latest, symbol) is None:
                await self.send(_error("unknown_symbol", f"no market data for {symbol}"))
            else:
                known.append(symbol)
        if len(self.symbols | set(known)) > MAX_SYMBOLS:
            await self.send(_error("too_many", f"at most {MAX_SYMBOLS} symbols per connection"))
            return
        self.symbols.update(known)
        if known:
            await self.send({"type": "subscribed", "symbols": known})
            self.wake.set()


async def _receive_loop(ws: WebSocket, idle_s: float, on_message: Any) -> None:
    while True:
        try:
            text = await asyncio.wait_for(ws.receive_text(), idle_s)
        except TimeoutError:
            await ws.close(code=1001, reason="idle timeout; send ping messages")
            return
        except KeyError:  # a binary frame: receive_text finds no "text"
            await on_message(None)
            continue
        await on_message(_parse(text))


@router.websocket("/ws/market-data")
async def market_data(ws: WebSocket) -> None:
    """Stream candles and tickers of the subscribed symbols."""
    await ws.accept()
    options = ws.app.state.options
    session = _MarketSession(ws, ws.app.state.feed, options.ws_poll_s)
    poller = asyncio.create_task(session.poll())
    try:
        await _receive_loop(ws, options.ws_idle_timeout_s, session.handle)
    except WebSocketDisconnect:
        pass
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await poller


def _authenticate(ws: WebSocket, token: str) -> int:
    identity: Identity = ws.app.state.identity
    user_id = identity.user_id(token)
    # A socket lives long: always ask the database, never the short-lived cache.
    identity.check_active(user_id)
    return user_id


@router.websocket("/ws/bots")
async def bot_events(ws: WebSocket) -> None:
    """Stream status changes, orders and fills of the authenticated user's bots."""
    await ws.accept()
    options = ws.app.state.options
    token = ws.query_params.get("token")
    try:
        if token is None:
            first = _parse(await asyncio.wait_for(ws.receive_text(), 10.0))
            token = first.get("token") if first and first.get("type") == "auth" else None
            if not isinstance(token, str):
                raise UnauthorizedError("authenticate first: {'type': 'auth', 'token': ...}")
        user_id = await run_in_threadpool(_authenticate, ws, token)
    except (UnauthorizedError, TimeoutError) as exc:
        message = str(exc) if isinstance(exc, UnauthorizedError) else "authentication timed out"
        await ws.send_json(_error("unauthorized", message))
        await ws.close(code=4401, reason=message[:120])
        return
    except WebSocketDisconnect:
        return
    hub: EventHub = ws.app.state.event_hub
    sub = hub.subscribe(user_id)
    await ws.send_json({"type": "authenticated", "userId": user_id})
    lock = asyncio.Lock()

    async def forward() -> None:
        while True:
            event = await sub.queue.get()
            async with lock:
                await ws.send_json(event)

    async def on_message(message: dict[str, Any] | None) -> None:
        reply = (
            {"type": "pong"}
            if message is not None and message.get("type") == "ping"
            else _error("malformed", "only {'type': 'ping'} is accepted here")
        )
        async with lock:
            await ws.send_json(reply)

    forwarder = asyncio.create_task(forward())
    try:
        await _receive_loop(ws, options.ws_idle_timeout_s, on_message)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await forwarder
