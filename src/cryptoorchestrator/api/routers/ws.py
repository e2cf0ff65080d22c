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

``/ws/runs`` authenticates the same way, then pushes the user's backtest and optimization runs
as they change, so the dashboard's run pages need no polling loop::

    <- {"type": "authenticated", "userId": 7}
    <- {"type": "run", "kind": "backtest" | "optimization", "id", "status", "progress",
        "error", "nTrials"?, "bestValue"?}        each active run at once, then on every change
                                                 (its last one when it ends)
    -> {"type": "watch", "runId": <optimization id>, "after": <last trial id seen, 0>}
    <- {"type": "watching", "runId"}             or an error ``not_found`` for no such study
    <- {"type": "trials", "runId", "items": [...]}   new trials (GET .../trials's items)
    -> {"type": "unwatch", "runId"}              <- {"type": "unwatched", "runId"}
    -> {"type": "ping"}                          <- {"type": "pong"}

Runs are written by the cluster's workers in other processes, so the head node reads them: one
read of the user's active, recently ended and watched runs every :data:`RUN_SCAN_S` seconds per
socket while any is active or watched, every :data:`RUN_IDLE_SCAN_S` seconds otherwise.  At most
:data:`MAX_WATCHED` studies are watched per socket.

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
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.api.context import AppContext
from cryptoorchestrator.api.deps import ContextDep
from cryptoorchestrator.api.events import EventHub, SocketSlots
from cryptoorchestrator.api.feeds import MAX_LISTED, SYMBOLS_ROUTE, MarketFeed, unknown_symbol
from cryptoorchestrator.api.routers.optimizations import trial_public
from cryptoorchestrator.platform.errors import (
    CryptoOrchError,
    UnauthorizedError,
    UnavailableError,
)
from cryptoorchestrator.platform.model import TIMEFRAMES, normalize_symbol
from cryptoorchestrator.platform.services.market_feed import FeedKey, Subscriber
from cryptoorchestrator.platform.storage.models import (
    BacktestRun,
    OptimizationRun,
    OptimizationTrial,
)

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


Serve = Callable[[WebSocket, AppContext, int], Awaitable[None]]


@router.websocket("/ws/bots")
async def bot_events(ws: WebSocket, context: ContextDep) -> None:
    """Stream status changes, orders and fills of the authenticated user's bots."""
    await _authenticated(ws, context, _serve_bot_events)


@router.websocket("/ws/runs")
async def run_events(ws: WebSocket, context: ContextDep) -> None:
    """Stream the authenticated user's backtest and optimization runs and watched trials."""
    await _authenticated(ws, context, _serve_run_events)


async def _authenticated(ws: WebSocket, context: AppContext, serve: Serve) -> None:
    """Take the address's slot, authenticate, take the user's slot, then ``serve``."""
    slots = context.ws_slots
    ip = _client(ws, context)
    if not slots.take_ip(ip):
        await _refuse(ws, f"too many WebSockets from this address (at most {slots.per_ip})")
        return
    try:
        await _authenticate_then(ws, context, slots, serve)
    finally:
        slots.release_ip(ip)


async def _authenticate_then(
    ws: WebSocket, context: AppContext, slots: SocketSlots, serve: Serve
) -> None:
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
        await serve(ws, context, user_id)
    finally:
        slots.release_user(user_id)


async def _serve_bot_events(ws: WebSocket, context: AppContext, user_id: int) -> None:
    await _stream_events(ws, context.event_hub, context.options, user_id)


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


#: Seconds between reads of a socket's runs while one is active, and while none is.
RUN_SCAN_S = 0.5
RUN_IDLE_SCAN_S = 3.0
#: How long before the previous scan a run's end still counts as new (the workers' clocks
#: and the head node's may differ a little; a run told already is not told again).
FINISHED_GRACE = timedelta(seconds=60)
#: Studies one ``/ws/runs`` socket may watch at once.
MAX_WATCHED = 20
#: Run statuses that may still change (the dashboard's ``active`` in js/runs.js).
ACTIVE_RUN_STATUSES = ("queued", "pending", "running", "cancelling")
_TRIALS_PER_READ = 1000


def _run_event(run: BacktestRun | OptimizationRun) -> dict[str, Any]:
    """The ``run`` message of a stored run."""
    event: dict[str, Any] = {
        "type": "run",
        "kind": "backtest" if isinstance(run, BacktestRun) else "optimization",
        "id": run.id,
        "status": run.status,
        "progress": run.progress,
        "error": run.error,
    }
    if isinstance(run, OptimizationRun):
        event["nTrials"] = run.n_trials
        event["bestValue"] = run.best_value
    return event


class RunWatch:
    """What one ``/ws/runs`` socket has been told: the runs' last states and watched studies.

    :meth:`scan` reads the database (blocking: run it on a worker thread) and returns only the
    messages that say something new.  A scan reads the user's active runs, the runs that
    finished since shortly before the previous scan (so a run that goes from queued to done
    between two scans is still told, once), and the runs it has told about and not yet seen
    end.

    Parameters
    ----------
    session_factory
        Makes the session each scan reads in.
    user_id
        Whose runs are read.
    """

    def __init__(self, session_factory: Callable[[], Session], user_id: int) -> None:
        self.session_factory = session_factory
        self.user_id = user_id
        self.sent: dict[str, dict[str, Any]] = {}
        self.watched: dict[str, int] = {}
        self.last_scan: datetime | None = None

    def active(self) -> bool:
        """Whether a run was active at the last scan (the next one comes sooner)."""
        return any(e["status"] in ACTIVE_RUN_STATUSES for e in self.sent.values())

    def watch(self, run_id: str, after: int) -> bool:
        """Start sending the trials of study ``run_id`` after trial ``after``; False if the
        user has no such study."""
        with self.session_factory() as session:
            owned = session.scalar(
                select(OptimizationRun.id).where(
                    OptimizationRun.id == run_id, OptimizationRun.user_id == self.user_id
                )
            )
        if owned is None:
            return False
        self.watched[run_id] = after
        return True

    def _runs(
        self,
        session: Session,
        model: type[BacktestRun] | type[OptimizationRun],
        since: datetime,
    ) -> list[Any]:
        known = [k for k, e in self.sent.items() if e["kind"] == _KIND[model]]
        if model is OptimizationRun:
            known += list(self.watched)
        condition = or_(
            model.status.in_(ACTIVE_RUN_STATUSES),
            model.finished_at >= since,
            model.id.in_(known) if known else false(),
        )
        return list(session.scalars(select(model).where(model.user_id == self.user_id, condition)))

    def scan(self) -> list[dict[str, Any]]:
        """Read the runs and watched trials; return the messages to send (changes only)."""
        now = datetime.now(UTC)
        since = (self.last_scan or now) - FINISHED_GRACE
        out: list[dict[str, Any]] = []
        with self.session_factory() as session:
            runs = [
                *self._runs(session, BacktestRun, since),
                *self._runs(session, OptimizationRun, since),
            ]
            for run in runs:
                event = _run_event(run)
                if self.sent.get(run.id) != event:
                    self.sent[run.id] = event
                    out.append(event)
            for run_id, after in list(self.watched.items()):
                rows = session.scalars(
                    select(OptimizationTrial)
                    .where(OptimizationTrial.run_id == run_id, OptimizationTrial.id > after)
                    .order_by(OptimizationTrial.id)
                    .limit(_TRIALS_PER_READ)
                ).all()
                if rows:
                    self.watched[run_id] = rows[-1].id
                    items = [trial_public(t) for t in rows]
                    out.append({"type": "trials", "runId": run_id, "items": items})
        # A run that ended is forgotten once its end has been told and it left the window of
        # recent ends (which keeps it from being told again meanwhile).
        for run in runs:
            ended = run.status not in ACTIVE_RUN_STATUSES and run.id not in self.watched
            if ended and (run.finished_at is None or run.finished_at < since):
                self.sent.pop(run.id, None)
        self.last_scan = now
        return out


_KIND: dict[type[Any], str] = {BacktestRun: "backtest", OptimizationRun: "optimization"}


async def _serve_run_events(ws: WebSocket, context: AppContext, user_id: int) -> None:
    watch = RunWatch(context.session_factory, user_id)
    lock = asyncio.Lock()
    wake = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await ws.send_json(message)

    async def scanner() -> None:
        while True:
            wake.clear()
            for message in await run_in_threadpool(watch.scan):
                await send(message)
            delay = RUN_SCAN_S if watch.active() or watch.watched else RUN_IDLE_SCAN_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    async def on_message(message: dict[str, Any] | None) -> None:
        kind = message.get("type") if message is not None else None
        if kind == "ping":
            await send({"type": "pong"})
            return
        run_id = message.get("runId") if message is not None else None
        if kind not in ("watch", "unwatch") or not isinstance(run_id, str) or len(run_id) > 36:
            await send(
                _error("malformed", "send ping, or watch/unwatch with a 'runId' (a study id)")
            )
            return
        if kind == "unwatch":
            watch.watched.pop(run_id, None)
            await send({"type": "unwatched", "runId": run_id})
            return
        after = message.get("after", 0) if message is not None else 0
        if type(after) is not int or not 0 <= after <= 2**62:
            await send(_error("malformed", "'after' must be a trial id (an integer >= 0)"))
            return
        if run_id not in watch.watched and len(watch.watched) >= MAX_WATCHED:
            await send(_error("too_many", f"at most {MAX_WATCHED} studies watched per socket"))
            return
        if not await run_in_threadpool(watch.watch, run_id, after):
            await send(_error("not_found", f"study {run_id} not found"))
            return
        await send({"type": "watching", "runId": run_id})
        wake.set()  # its trials so far go out now, not at the next scan

    await send({"type": "authenticated", "userId": user_id})
    task = asyncio.create_task(scanner())
    try:
        await _receive_loop(ws, context.options, on_message, send)
    except WebSocketDisconnect:
        pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
