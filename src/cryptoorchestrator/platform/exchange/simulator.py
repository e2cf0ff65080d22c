"""A Binance-compatible spot exchange on loopback that replays stored real candles.

It answers the Binance spot REST API exactly as ccxt's ``binance`` class calls it (Binance's field
names, string-encoded decimals, error codes), so clients, downloaders and bots are tested against
ccxt's real code with no network.

Starting it
-----------
In a sync test (ccxt's sync client, the CLI, a bot in another thread)::

    from cryptoorchestrator.platform.exchange.simulator import (
        ccxt_binance_for, run_simulator_in_thread,
    )

    with run_simulator_in_thread({"BTC/USDT": "candles.feather"}, start_ms=t0) as sim:
        ex = ccxt_binance_for(sim.base_url, api_key=sim.api_key, secret=sim.api_secret)
        ex.load_markets()
        ex.create_order("BTC/USDT", "market", "buy", 0.01)
        sim.advance(3_600_000)          # one hour of simulated time: limit orders may fill

In async code (same loop as the client)::

    sim = ExchangeSimulator({"BTC/USDT": table})
    base_url = await sim.start()        # 127.0.0.1 on a free port
    ex = ccxt_binance_for(base_url, api_key=..., secret=..., async_=True)
    ...
    await ex.close(); await sim.stop()

``data`` is a mapping symbol -> candles (a pyarrow table in ``OHLCV_SCHEMA``, or a
feather/CSV/Parquet file), or a single table/file served as ``BTC/USDT``.

Time
----
The simulated clock decides which candles exist: candles that closed before "now" are final, the
one containing "now" is partial (its prices follow the path described in
:mod:`~cryptoorchestrator.platform.exchange.sim_market`), later ones are invisible.

* History (default: no ``start_ms``, ``speed=0``): the clock stands at the end of the data.
* Live feed (``speed > 0``): the clock runs ``speed`` x real time from ``start_ms`` (default: the
  open of candle ``warmup_candles``, so 1,000 candles of history exist).
* Stepped tests: ``speed=0`` and ``start_ms``; move with ``sim.advance(ms)`` / ``sim.set_time(ms)``
  or ``POST /_sim/clock {"advance": ms}`` / ``{"set_time": ms}`` / ``{"speed": x}``.

``GET /api/v3/time`` answers the simulated time.  Signed requests' ``timestamp`` is checked
against the machine's real clock (as Binance checks it against its own), so ccxt must not adjust
for the time difference (``ccxt_binance_for`` sets that).

Accounts
--------
Default credentials for local use: API key :data:`DEFAULT_API_KEY`, secret
:data:`DEFAULT_API_SECRET`, starting balance 10,000 USDT.  Pass ``accounts=[SimAccountSpec(...)]``
for others.  Requests signed with any other secret get -1022.

Kline WebSocket stream
----------------------
``ws://<host>:<port>/ws`` (:func:`ws_url_for` derives it from ``base_url``) speaks Binance's spot
market-stream protocol as ``ccxt.pro``'s ``binance`` uses it (:func:`ccxt_pro_binance_for` builds
that client).  ccxt connects to ``/ws/<n>`` (``n``: its stream index, ``0``); any path below
``/ws`` is accepted, and a path segment that is a stream name (``/ws/btcusdt@kline_1h``)
subscribes to it as Binance's raw-stream URLs do.  Requests are JSON text frames::

    {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 1}   -> {"result": null, "id": 1}
    {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 2} -> {"result": null, "id": 2}
    {"method": "LIST_SUBSCRIPTIONS", "id": 3}          -> {"result": ["btcusdt@kline_1h"], "id": 3}

Errors have Binance's shape, ``{"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 1}``
(code 3: not JSON); a SUBSCRIBE naming any stream the simulator cannot serve (not
``<symbol>@kline_<interval>``, unknown symbol, an interval finer than the stored candles or not
Binance's) subscribes to none of its streams.

Events are Binance's kline events, ``{"e": "kline", "E": now, "s": "BTCUSDT", "k": {"t", "T",
"s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}}``, with ``E`` the
simulated time and the prices and volumes of ``k`` exactly those of the same candle's row in
``GET /api/v3/klines`` at that time (one function builds both):

* right after a SUBSCRIBE reply: the stream's current candle (``x`` false while it forms);
* whenever the clock moves (``advance``, ``set_time``, ``POST /_sim/clock``, and with
  ``speed > 0`` a timer in the server's loop that sleeps until the next close): every candle that
  closed since the last event, oldest first, each once with ``x`` true (at most the last 1,000
  per move, a ``/klines`` page), then the forming candle as it is now (``x`` false);
* with ``speed > 0``, the forming candle again every 2 s of real time, as Binance does.

``advance``/``set_time`` may be called from any thread: the events are handed to the server's
loop.  The WebSocket handshake is faulted only when ``path_prefix`` selects it (``"/ws"``), so
REST fault counters are not consumed by a client reconnecting its stream.

Admin endpoints (never faulted, not part of Binance)
----------------------------------------------------
``GET/POST /_sim/clock``, ``GET/POST /_sim/faults`` (see
:mod:`~cryptoorchestrator.platform.exchange.sim_faults`), ``GET /_sim/orders`` (every account's
orders, Binance's order shape plus ``apiKey``), ``GET /_sim/balances``, ``GET /_sim/stats``
(requests served per ``METHOD /path``), ``GET /_sim/ws`` (open stream connections, subscriptions
per stream, kline events pushed) and ``POST /_sim/ws {"drop": true}`` (close every stream
connection with code 1001, as Binance does after 24 h; ``"abort": true`` cuts the TCP
connection instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pyarrow as pa
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.sim_faults import FaultState
from cryptoorchestrator.platform.exchange.sim_market import (
    TRADES_PER_CANDLE,
    Bar,
    ReplayMarket,
    SimClock,
    SymbolSpec,
    build_markets,
)
from cryptoorchestrator.platform.exchange.sim_matching import (
    BinanceReject,
    MatchingEngine,
    SimAccount,
    fmt,
    select_orders,
)
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms

#: Default credentials for local use only (the simulator holds no real money).
DEFAULT_API_KEY = "cryptoorch-sim-key"
DEFAULT_API_SECRET = "cryptoorch-sim-secret"  # noqa: S105  (a documented local default)

_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
)
_MSG_RATE = (
    "Too many requests; current limit of IP(127.0.0.1) request weight is 6000 per minute. "
    "Please use the websocket for live updates to avoid bans."
)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger(__name__)
_WS_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS")
#: Binance pushes the forming candle of a kline stream every 2 s; the running clock does too.
_KLINE_UPDATE_S = 2.0
#: Most closed candles pushed per stream for one clock move (one /klines page).
_MAX_PUSH = 1000


class SimAccountSpec(BaseModel):
    """Credentials and starting balances of one simulated account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str = DEFAULT_API_KEY
    api_secret: SecretStr = SecretStr(DEFAULT_API_SECRET)
    balances: dict[str, Decimal] = Field(default_factory=lambda: {"USDT": Decimal(10_000)})


def parse_balances(items: Sequence[str]) -> dict[str, Decimal]:
    """Return ``{"USDT": Decimal("10000")}`` from CLI words like ``USDT=10000``.

    Raises
    ------
    InvalidInputError
        If a word is not ``ASSET=amount`` with a non-negative amount.
    """
    out: dict[str, Decimal] = {}
    for item in items:
        asset, sep, amount = item.partition("=")
        try:
            value = Decimal(amount.strip())
        except ArithmeticError:
            value = Decimal(-1)
        if not sep or not asset.strip().isalnum() or not value.is_finite() or value < 0:
            raise InvalidInputError("--balance", f"expected ASSET=amount, got {item!r}")
        out[asset.strip().upper()] = value
    return out


def _ms_now() -> int:
    return int(time.time() * 1000)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(code: int, msg: str, status: int = 400) -> web.Response:
    return _json({"code": code, "msg": msg}, status=status)


class ExchangeSimulator:
    """The simulated Binance spot exchange: market data, accounts, matching, faults, HTTP.

    Parameters
    ----------
    data
        Symbol -> candles (table or file), or one table/file served as ``BTC/USDT``.
    timeframe
        Timeframe of the stored candles (inferred from their spacing when None).
    start_ms
        Where the clock starts; None: the end of the data (history) or, with ``speed > 0``, the
        open of candle ``warmup_candles`` (live feed).
    speed
        Simulated seconds per real second; 0 freezes the clock (tests step it).
    accounts
        Accounts to create; None creates one with the documented defaults.
    fee_rate, slippage_bps, partial_fill_ratio
        Matching parameters (see :class:`MatchingEngine`).
    faults
        Initial fault switches (see :class:`FaultState`).
    specs
        Filters per symbol; default ones follow the price level (BTC: tick 0.01, step 0.00001).
    """

    def __init__(
        self,
        data: Mapping[str, pa.Table | str | Path] | pa.Table | str | Path,
        *,
        timeframe: str | None = None,
        start_ms: int | None = None,
        speed: float = 0.0,
        accounts: Sequence[SimAccountSpec] | None = None,
        fee_rate: Decimal | str = Decimal("0.001"),
        slippage_bps: Decimal | str | float = Decimal(0),
        partial_fill_ratio: Decimal | str | float | None = None,
        faults: Mapping[str, Any] | None = None,
        specs: Mapping[str, SymbolSpec] | None = None,
        warmup_candles: int = 1000,
    ) -> None:
        if not isinstance(data, Mapping):
            data = {"BTC/USDT": data}
        self.markets: dict[str, ReplayMarket] = build_markets(
            data, timeframe=timeframe, specs=specs
        )
        first = next(iter(self.markets.values()))
        if start_ms is None:
            if speed > 0:
                start_ms = int(first.ts[min(warmup_candles, len(first.ts) - 1)])
            else:
                start_ms = max(m.end_ms for m in self.markets.values())
        self.clock = SimClock(start_ms, speed)
        ratio = Decimal(str(partial_fill_ratio)) if partial_fill_ratio is not None else None
        if ratio is not None and not Decimal(0) < ratio <= Decimal(1):
            raise InvalidInputError("partial_fill_ratio", "must be in (0, 1]")
        self.engine = MatchingEngine(
            self.markets,
            fee_rate=Decimal(str(fee_rate)),
            slippage_bps=Decimal(str(slippage_bps)),
            partial_fill_ratio=ratio,
            start_ms=start_ms,
        )
        specs_list = list(accounts) if accounts is not None else [SimAccountSpec()]
        for spec in specs_list:
            self.engine.add_account(spec.api_key, spec.api_secret.get_secret_value(), spec.balances)
        self._default_account = specs_list[0].api_key if specs_list else None
        self.faults = FaultState()
        if faults:
            self.faults.update(faults)
        self.stats: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.base_url = ""
        # Kline streams: touched only in the server's loop, except _loop (read by any thread).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws_conns: set[_WsConnection] = set()
        self._ws_replan: asyncio.Event | None = None
        self._ws_clock_task: asyncio.Task[None] | None = None
        self._ws_pushed = 0

    # ------------------------------------------------------------------ Python API

    @property
    def api_key(self) -> str:
        """Return the first account's API key."""
        assert self._default_account is not None
        return self._default_account

    @property
    def api_secret(self) -> str:
        """Return the first account's secret (for building a client; never log it)."""
        return self.engine.accounts[self.api_key].secret

    def now(self) -> int:
        """Return the simulated time in ms."""
        with self._lock:
            return self.clock.now()

    def set_time(self, ms: int) -> int:
        """Move the clock to ``ms`` (forward only) and fill what the prices reached; return now."""
        with self._lock:
            self._sync()
            if ms < self.clock.now():
                raise InvalidInputError("set_time", "the clock cannot go backwards")
            self.clock.set_time(ms)
            now = self._sync()
        self._ws_kick()
        return now

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` and fill what the prices reached; return now."""
        with self._lock:
            self._sync()
            self.clock.advance(ms)
            now = self._sync()
        self._ws_kick()
        return now

    def set_speed(self, speed: float) -> None:
        """Run the clock at ``speed`` x real time from now on (0 freezes it)."""
        with self._lock:
            self._sync()
            self.clock.set_speed(speed)
        self._ws_kick()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change fault switches (see :class:`FaultState`); return all of them."""
        with self._lock:
            self.faults.update(changes)
            return self.faults.to_dict()

    def clear_faults(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self.faults = FaultState()

    def orders(self, api_key: str | None = None) -> list[dict[str, Any]]:
        """Return the orders of one account (default: all), as GET /api/v3/order shows them."""
        with self._lock:
            self._sync()
            out = []
            for key, account in self.engine.accounts.items():
                if api_key is not None and key != api_key:
                    continue
                for order in select_orders(account.orders.values()):
                    out.append({**order.to_wire(), "apiKey": key})
            return out

    def balances(self, api_key: str | None = None) -> dict[str, tuple[Decimal, Decimal]]:
        """Return ``asset -> (free, locked)`` of an account (default: the first one)."""
        with self._lock:
            self._sync()
            account = self.engine.accounts[api_key or self.api_key]
            assets = sorted(set(account.free) | set(account.locked))
            return {a: account.balance(a) for a in assets}

    def _sync(self) -> int:
        now = self.clock.now()
        self.engine.process_until(now)
        return now

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: a free port) in the running loop; return the base URL."""
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        self._loop = asyncio.get_running_loop()
        self._ws_replan = asyncio.Event()
        self._ws_clock_task = self._loop.create_task(self._ws_clock(self._ws_replan))
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; hanging (timeout-fault) requests and stream connections are released."""
        if self._stopping is not None:
            self._stopping.set()
        task, self._ws_clock_task = self._ws_clock_task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        # Going away (1001) lets clients reconnect at once instead of timing out a dead socket.
        await self._close_ws_connections(abort=False, message=b"server stopping")
        self._loop = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drop_ws_connections(self, *, abort: bool = False) -> int:
        """Close every stream connection (in the server's loop); return how many there were.

        ``abort`` cuts the TCP connections without a close frame (a network failure); otherwise
        they are closed with 1001, as Binance closes connections after 24 hours.
        """
        return await self._close_ws_connections(abort=abort, message=b"dropped by the simulator")

    # ------------------------------------------------------------------ HTTP plumbing

    def _add_routes(self, app: web.Application) -> None:
        get, post, delete = app.router.add_get, app.router.add_post, app.router.add_delete
        for prefix in ("/api/v3", "/api/v1"):
            get(f"{prefix}/ping", self._ping)
            get(f"{prefix}/time", self._time)
        get("/api/v3/exchangeInfo", self._exchange_info)
        get("/api/v3/klines", self._klines)
        get("/api/v3/uiKlines", self._klines)
        get("/api/v3/ticker/24hr", self._ticker_24hr)
        get("/api/v3/ticker/price", self._ticker_price)
        get("/api/v3/ticker/bookTicker", self._book_ticker)
        get("/api/v3/avgPrice", self._avg_price)
        get("/api/v3/depth", self._depth)
        get("/api/v3/trades", self._trades)
        get("/api/v3/historicalTrades", self._trades)
        get("/api/v3/aggTrades", self._agg_trades)
        get("/api/v3/account", self._signed(self._account))
        post("/api/v3/order", self._signed(self._new_order))
        post("/api/v3/order/test", self._signed(self._test_order))
        get("/api/v3/order", self._signed(self._get_order))
        delete("/api/v3/order", self._signed(self._cancel_order))
        get("/api/v3/openOrders", self._signed(self._open_orders))
        delete("/api/v3/openOrders", self._signed(self._cancel_all))
        get("/api/v3/allOrders", self._signed(self._all_orders))
        get("/api/v3/myTrades", self._signed(self._my_trades))
        get("/_sim/clock", self._admin_clock)
        post("/_sim/clock", self._admin_clock)
        get("/_sim/faults", self._admin_faults)
        post("/_sim/faults", self._admin_faults)
        get("/_sim/orders", self._admin_orders)
        get("/_sim/balances", self._admin_balances)
        get("/_sim/stats", self._admin_stats)
        get("/_sim/ws", self._admin_ws)
        post("/_sim/ws", self._admin_ws)
        get("/ws", self._ws)
        get("/ws/{tail:.*}", self._ws)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        path = request.path
        with self._lock:
            self.stats[f"{request.method} {path}"] += 1
            stream = (path == "/ws" or path.startswith("/ws/")) and not self.faults.path_prefix
            if path.startswith("/_sim/") or stream or not self.faults.applies_to(path):
                latency, action = 0, None
            else:
                latency, action = self.faults.latency_ms, self._take_fault()
            hang = self.faults.hang_s
            retry_after = self.faults.retry_after_s
            fail_status = self.faults.fail_status
        if latency:
            await asyncio.sleep(latency / 1000.0)
        if action == "timeout":
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=hang)
            except TimeoutError:
                pass
            return web.Response(status=504, text="Gateway Timeout")
        if action == "rate_limit":
            return _json(
                {"code": -1003, "msg": _MSG_RATE},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        if action == "fail":
            return web.Response(status=fail_status, text="Service Unavailable")
        try:
            return await handler(request)
        except BinanceReject as exc:
            return _error(exc.code, exc.msg, exc.status)
        except InvalidInputError as exc:
            return _error(-1100, str(exc))

    def _take_fault(self) -> str | None:
        f = self.faults
        if f.timeout_next > 0:
            f.timeout_next -= 1
            return "timeout"
        if f.rate_limit_next > 0:
            f.rate_limit_next -= 1
            return "rate_limit"
        if f.fail_next > 0:
            f.fail_next -= 1
            return "fail"
        return None

    @staticmethod
    async def _params(request: web.Request) -> tuple[dict[str, str], str, str]:
        """Return the merged parameters and the raw query string and body Binance signs."""
        raw_query = request.raw_path.partition("?")[2]
        raw_body = ""
        if request.can_read_body:
            raw_body = (await request.read()).decode("utf-8", errors="replace")
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if raw_body and request.content_type != "application/json":
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        return params, raw_query, raw_body

    def _signed(self, handler: Callable[[SimAccount, dict[str, str], int], Any]) -> _Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            params, raw_query, raw_body = await self._params(request)
            with self._lock:
                account = self._authenticate(request, params, raw_query, raw_body)
                now = self._sync()
                result = handler(account, params, now)
            if isinstance(result, web.StreamResponse):
                return result
            if callable(result):
                return await result(request)
            return _json(result)

        return wrapped

    def _authenticate(
        self, request: web.Request, params: Mapping[str, str], raw_query: str, raw_body: str
    ) -> SimAccount:
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if not api_key or len(api_key) > 128 or not api_key.replace("-", "").isalnum():
            raise BinanceReject(-2014, "API-key format invalid.", 401)
        account = self.engine.accounts.get(api_key)
        if account is None:
            raise BinanceReject(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        signature = params.get("signature", "")
        if not signature:
            raise BinanceReject(
                -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        # Binance signs totalParams = query string + request body, without the signature itself.
        payload = _strip_signature(raw_query) + _strip_signature(raw_body)
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BinanceReject(-1022, "Signature for this request is not valid.")
        ts_text = params.get("timestamp", "")
        if not ts_text.isdigit():
            raise BinanceReject(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            )
        recv_text = params.get("recvWindow", "5000")
        try:
            recv_window = int(Decimal(recv_text))
        except ArithmeticError:
            raise BinanceReject(
                -1100, "Illegal characters found in parameter 'recvWindow'."
            ) from None
        if recv_window > 60_000 or recv_window <= 0:
            raise BinanceReject(-1131, "recvWindow must be less than 60000")
        server = _ms_now()
        timestamp = int(ts_text)
        if timestamp >= server + 1000:
            raise BinanceReject(
                -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if server - timestamp > recv_window:
            raise BinanceReject(-1021, "Timestamp for this request is outside of the recvWindow.")
        return account

    # ------------------------------------------------------------------ public endpoints

    def _market(self, params: Mapping[str, str]) -> ReplayMarket:
        return self.engine.market(params.get("symbol"))

    def _now(self) -> int:
        with self._lock:
            return self._sync()

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self._now()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        wanted: set[str] | None = None
        if "symbol" in params:
            wanted = {params["symbol"]}
        elif "symbols" in params:
            try:
                wanted = set(json.loads(params["symbols"]))
            except ValueError:
                raise BinanceReject(
                    -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
        symbols = []
        for market_id, market in self.markets.items():
            if wanted is not None and market_id not in wanted:
                continue
            symbols.append(_symbol_info(market.spec))
        if wanted is not None and not symbols:
            raise BinanceReject(-1121, "Invalid symbol.")
        return _json(
            {
                "timezone": "UTC",
                "serverTime": self._now(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "DAY",
                        "intervalNum": 1,
                        "limit": 200000,
                    },
                    {
                        "rateLimitType": "RAW_REQUESTS",
                        "interval": "MINUTE",
                        "intervalNum": 5,
                        "limit": 61000,
                    },
                ],
                "exchangeFilters": [],
                "symbols": symbols,
            }
        )

    async def _klines(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        market = self._market(params)
        interval = params.get("interval", "")
        if not interval:
            raise BinanceReject(
                -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
            )
        if interval not in _INTERVALS:
            raise BinanceReject(-1120, "Invalid interval.")
        interval_ms = timeframe_to_ms(interval)
        if interval_ms < market.tf_ms or interval_ms % market.tf_ms:
            # The simulator cannot invent finer candles than it stores.
            raise BinanceReject(-1120, "Invalid interval.")
        limit = _int_param(params, "limit", 500, 1, 1000)
        start = _opt_int(params, "startTime")
        end = _opt_int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise BinanceReject(-1127, "More than 200 hours between startTime and endTime.")
        now = self._now()
        bars = market.klines(interval_ms, now, start=start, end=end, limit=limit)
        pd = market.spec.price_decimals
        rows = [_kline_row(b, interval_ms, pd) for b in bars]
        return _json(rows)

    def _ticker(self, market: ReplayMarket, now: int) -> dict[str, Any]:
        window = market.window(now - 86_400_000, now)
        pd = market.spec.price_decimals
        last = market.price(now)
        if not window or last is None:
            open_ = high = low = last_ = 0.0
            volume = 0.0
            open_time = now - 86_400_000
        else:
            open_, last_ = window[0].open, last
            high = max(b.high for b in window)
            low = min(b.low for b in window)
            volume = sum(b.volume for b in window)
            open_time = window[0].open_time
        prev_idx = (window[0].index - 1) if window else -1
        prev_close = float(market.c[prev_idx]) if prev_idx >= 0 else open_
        bid, ask = _best_quotes(market, now)
        change = last_ - open_
        quote_volume = sum(b.volume * (b.high + b.low + b.close) / 3 for b in window)
        first_id = window[0].index * TRADES_PER_CANDLE if window else -1
        last_id = window[-1].index * TRADES_PER_CANDLE + TRADES_PER_CANDLE - 1 if window else -1
        return {
            "symbol": market.spec.market_id,
            "priceChange": _p(change, pd),
            "priceChangePercent": f"{(change / open_ * 100) if open_ else 0.0:.3f}",
            "weightedAvgPrice": _p(quote_volume / volume if volume else last_, pd),
            "prevClosePrice": _p(prev_close, pd),
            "lastPrice": _p(last_, pd),
            "lastQty": fmt(market.spec.step_size * 10),
            "bidPrice": fmt(bid),
            "bidQty": fmt(Decimal("0.5")),
            "askPrice": fmt(ask),
            "askQty": fmt(Decimal("0.5")),
            "openPrice": _p(open_, pd),
            "highPrice": _p(high, pd),
            "lowPrice": _p(low, pd),
            "volume": f"{volume:.8f}",
            "quoteVolume": f"{quote_volume:.8f}",
            "openTime": open_time,
            "closeTime": now,
            "firstId": first_id,
            "lastId": last_id,
            "count": max(0, last_id - first_id + 1),
        }

    def _markets_for(self, params: Mapping[str, str]) -> list[ReplayMarket] | ReplayMarket:
        if "symbol" in params:
            return self._market(params)
        if "symbols" in params:
            try:
                ids = json.loads(params["symbols"])
            except ValueError:
                raise BinanceReject(
                    -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
            return [self.engine.market(str(i)) for i in ids]
        return list(self.markets.values())

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        now = self._now()
        sel = self._markets_for(request.query)
        if isinstance(sel, ReplayMarket):
            return _json(self._ticker(sel, now))
        return _json([self._ticker(m, now) for m in sel])

    async def _ticker_price(self, request: web.Request) -> web.Response:
        now = self._now()
        sel = self._markets_for(request.query)

        def one(m: ReplayMarket) -> dict[str, str]:
            return {
                "symbol": m.spec.market_id,
                "price": _p(m.price(now) or 0.0, m.spec.price_decimals),
            }

        return _json(one(sel) if isinstance(sel, ReplayMarket) else [one(m) for m in sel])

    async def _book_ticker(self, request: web.Request) -> web.Response:
        now = self._now()
        sel = self._markets_for(request.query)

        def one(m: ReplayMarket) -> dict[str, str]:
            bid, ask = _best_quotes(m, now)
            return {
                "symbol": m.spec.market_id,
                "bidPrice": fmt(bid),
                "bidQty": fmt(Decimal("0.5")),
                "askPrice": fmt(ask),
                "askQty": fmt(Decimal("0.5")),
            }

        return _json(one(sel) if isinstance(sel, ReplayMarket) else [one(m) for m in sel])

    async def _avg_price(self, request: web.Request) -> web.Response:
        market = self._market(request.query)
        now = self._now()
        return _json(
            {
                "mins": 5,
                "price": _p(market.price(now) or 0.0, market.spec.price_decimals),
                "closeTime": now,
            }
        )

    async def _depth(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        market = self._market(params)
        limit = _int_param(params, "limit", 100, 1, 5000)
        now = self._now()
        bid, ask = _best_quotes(market, now)
        tick = market.spec.tick_size
        # Levels a few ticks apart with deterministic sizes that change as time passes.
        gap = tick * max(1, int((bid * Decimal("0.00001")) / tick))
        seed = now // 1000
        bids, asks = [], []
        for k in range(limit):
            size = Decimal((seed * 7919 + k * 104_729) % 100_000 + 1_000) / Decimal(100_000)
            size = (size / market.spec.step_size).to_integral_value() * market.spec.step_size
            if bid - gap * k > 0:
                bids.append([fmt(bid - gap * k), fmt(size)])
            asks.append([fmt(ask + gap * k), fmt(size)])
        return _json({"lastUpdateId": now, "bids": bids, "asks": asks})

    def _recent_public_trades(
        self, market: ReplayMarket, params: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        limit = _int_param(params, "limit", 500, 1, 1000)
        now = self._now()
        from_id = _opt_int(params, "fromId")
        start = _opt_int(params, "startTime")
        end = _opt_int(params, "endTime")
        visible = market.visible_count(now)
        per = TRADES_PER_CANDLE
        if from_id is not None:
            first = from_id // per
            trades = market.public_trades(
                now, first_candle=first, last_candle=first + limit // per + 2
            )
            trades = [t for t in trades if t["id"] >= from_id][:limit]
        elif start is not None:
            import numpy as np

            first = int(np.searchsorted(market.ts, start, "left")) - 1
            trades = market.public_trades(
                now, first_candle=first, last_candle=first + limit // per + 2
            )
            trades = [t for t in trades if t["time"] >= start and (end is None or t["time"] <= end)]
            trades = trades[:limit]
        else:
            trades = market.public_trades(
                now, first_candle=visible - limit // per - 2, last_candle=visible
            )[-limit:]
        return trades

    async def _trades(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        market = self._market(params)
        pd = market.spec.price_decimals
        rows = [
            {
                "id": t["id"],
                "price": _p(t["price"], pd),
                "qty": f"{t['qty']:.8f}",
                "quoteQty": f"{t['qty'] * t['price']:.8f}",
                "time": t["time"],
                "isBuyerMaker": t["isBuyerMaker"],
                "isBestMatch": True,
            }
            for t in self._recent_public_trades(market, params)
        ]
        return _json(rows)

    async def _agg_trades(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        market = self._market(params)
        pd = market.spec.price_decimals
        rows = [
            {
                "a": t["id"],
                "p": _p(t["price"], pd),
                "q": f"{t['qty']:.8f}",
                "f": t["id"],
                "l": t["id"],
                "T": t["time"],
                "m": t["isBuyerMaker"],
                "M": True,
            }
            for t in self._recent_public_trades(market, params)
        ]
        return _json(rows)

    # ------------------------------------------------------------------ signed endpoints

    def _account(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        rate = self.engine.fee_rate
        bps = int(rate * 10_000)
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        balances = []
        for asset in sorted(set(account.free) | set(account.locked)):
            free, locked = account.balance(asset)
            if omit_zero and free == 0 and locked == 0:
                continue
            balances.append({"asset": asset, "free": fmt(free), "locked": fmt(locked)})
        return {
            "makerCommission": bps,
            "takerCommission": bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(rate),
                "taker": fmt(rate),
                "buyer": fmt(Decimal(0)),
                "seller": fmt(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": account.update_time,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": abs(hash(account.api_key)) % 10**9,
        }

    def _new_order(self, account: SimAccount, params: dict[str, str], now: int) -> Any:
        order = self.engine.place_order(account, params, now)
        if self.faults.drop_next_orders > 0 and self.faults.applies_to("/api/v3/order"):
            self.faults.drop_next_orders -= 1
            return self._dropped_answer(self.faults.drop_mode)
        resp_type = (params.get("newOrderRespType") or "FULL").upper()
        return order.to_new_order_response(resp_type)

    @staticmethod
    def _dropped_answer(mode: str) -> _Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            if mode == "close":
                transport = request.transport
                if transport is not None:
                    transport.abort()
                # Nothing can be sent any more; aiohttp discards the response.
                return web.Response(status=503)
            return web.Response(status=503, text="Service Unavailable")

        return answer

    def _test_order(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        self.engine.market(params.get("symbol"))
        return {}

    def _get_order(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        market = self._market(params)
        order = self.engine.find_order(
            account, market.spec.market_id, params.get("orderId"), params.get("origClientOrderId")
        )
        return order.to_wire()

    def _cancel_order(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> dict[str, Any]:
        market = self._market(params)
        order = self.engine.cancel_order(
            account,
            market.spec.market_id,
            params.get("orderId"),
            params.get("origClientOrderId"),
            now,
        )
        return _cancel_wire(order, params.get("newClientOrderId"), now)

    def _cancel_all(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        market = self._market(params)
        out = []
        for order in select_orders(
            account.orders.values(), market_id=market.spec.market_id, open_only=True
        ):
            self.engine.cancel_order(account, market.spec.market_id, str(order.order_id), None, now)
            out.append(_cancel_wire(order, None, now))
        return out

    def _open_orders(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        market_id = self._market(params).spec.market_id if params.get("symbol") else None
        return [
            o.to_wire()
            for o in select_orders(account.orders.values(), market_id=market_id, open_only=True)
        ]

    def _all_orders(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        market = self._market(params)
        limit = _int_param(params, "limit", 500, 1, 1000)
        from_id = _opt_int(params, "orderId")
        start, end = _opt_int(params, "startTime"), _opt_int(params, "endTime")
        rows = []
        for o in select_orders(account.orders.values(), market_id=market.spec.market_id):
            if from_id is not None and o.order_id < from_id:
                continue
            if start is not None and o.time < start:
                continue
            if end is not None and o.time > end:
                continue
            rows.append(o.to_wire())
        return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]

    def _my_trades(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        market = self._market(params)
        limit = _int_param(params, "limit", 500, 1, 1000)
        order_id = _opt_int(params, "orderId")
        from_id = _opt_int(params, "fromId")
        start, end = _opt_int(params, "startTime"), _opt_int(params, "endTime")
        rows = []
        for fill in account.trades:
            if fill.market_id != market.spec.market_id:
                continue
            if order_id is not None and fill.order_id != order_id:
                continue
            if from_id is not None and fill.trade_id < from_id:
                continue
            if start is not None and fill.time < start:
                continue
            if end is not None and fill.time > end:
                continue
            rows.append(fill.to_wire())
        return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]

    # ------------------------------------------------------------------ admin endpoints

    async def _admin_clock(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _json_body(request)
            try:
                if "set_time" in body:
                    self.set_time(int(body["set_time"]))
                if "advance" in body:
                    self.advance(int(body["advance"]))
                if "speed" in body:
                    self.set_speed(float(body["speed"]))
            except (TypeError, ValueError) as exc:
                return _json({"error": str(exc)}, status=400)
        with self._lock:
            return _json({"now": self._sync(), "speed": self.clock.speed})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _json_body(request)
            try:
                if body.pop("clear", False):
                    self.clear_faults()
                self.set_faults(**body)
            except InvalidInputError as exc:
                return _json({"error": str(exc)}, status=400)
        with self._lock:
            return _json(self.faults.to_dict())

    async def _admin_orders(self, request: web.Request) -> web.Response:
        return _json(self.orders(request.query.get("apiKey")))

    async def _admin_balances(self, request: web.Request) -> web.Response:
        key = request.query.get("apiKey") or self.api_key
        if key not in self.engine.accounts:
            return _json({"error": "unknown apiKey"}, status=404)
        bal = self.balances(key)
        return _json({a: {"free": fmt(f), "locked": fmt(lk)} for a, (f, lk) in bal.items()})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        with self._lock:
            return _json(dict(self.stats))

    async def _admin_ws(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _json_body(request)
            if body.get("drop"):
                dropped = await self.drop_ws_connections(abort=bool(body.get("abort", False)))
                return _json({"dropped": dropped})
        streams: Counter[str] = Counter()
        for conn in self._ws_conns:
            streams.update(conn.subs.keys())
        return _json(
            {
                "connections": len(self._ws_conns),
                "streams": dict(sorted(streams.items())),
                "pushed": self._ws_pushed,
            }
        )

    # ------------------------------------------------------------------ kline WebSocket stream

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        # A short close handshake: stop() must not wait 10 s for a client that went away.
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        conn = _WsConnection(ws, request)
        self._ws_conns.add(conn)
        writer = asyncio.get_running_loop().create_task(_ws_writer(conn))
        try:
            # Binance's raw-stream URLs (/ws/btcusdt@kline_1h); ccxt's /ws/0 names no stream.
            named = [n for n in request.match_info.get("tail", "").split("/") if n]
            self._ws_subscribe(conn, [n for n in named if self._kline_stream(n) is not None])
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._ws_request(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.error(3, "Invalid JSON: expected a text frame", None)
        finally:
            self._ws_conns.discard(conn)
            conn.outbox.put_nowait(None)
            try:
                await asyncio.wait_for(writer, timeout=1.0)
            except TimeoutError:
                pass  # wait_for cancelled the writer stuck on a client that stopped reading
        return ws

    def _ws_request(self, conn: _WsConnection, text: str) -> None:
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
            self._ws_subscribe(conn, params)
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
        if market is None or interval not in _INTERVALS:
            return None
        interval_ms = timeframe_to_ms(interval)
        if interval_ms < market.tf_ms or interval_ms % market.tf_ms:
            return None  # as GET /klines: no finer candles than the stored ones
        return market, interval, interval_ms

    def _ws_subscribe(self, conn: _WsConnection, names: Sequence[str]) -> None:
        """Add streams to a connection and send each its current candle."""
        now = self.now()
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
                self._ws_push(conn, sub, bar, now)
            conn.subs[name] = sub
        if self._ws_replan is not None:
            self._ws_replan.set()  # a new stream may close before the timer's current plan

    def _ws_push(self, conn: _WsConnection, sub: _KlineSub, bar: Bar, now: int) -> None:
        row = _kline_row(bar, sub.interval_ms, sub.market.spec.price_decimals)
        first_trade = bar.index * TRADES_PER_CANDLE
        market_id = sub.market.spec.market_id
        kline = {
            "t": row[0],
            "T": row[6],
            "s": market_id,
            "i": sub.interval,
            "f": first_trade,
            "L": first_trade + row[8] - 1,
            "o": row[1],
            "c": row[4],
            "h": row[2],
            "l": row[3],
            "v": row[5],
            "n": row[8],
            "x": bar.closed,
            "q": row[7],
            "V": row[9],
            "Q": row[10],
            "B": row[11],
        }
        conn.send({"e": "kline", "E": now, "s": market_id, "k": kline})
        self._ws_pushed += 1

    def _ws_kick(self) -> None:
        """Have the server's loop push what the clock just moved past (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._ws_wake()
            return
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody is listening
            loop.call_soon_threadsafe(self._ws_wake)

    def _ws_wake(self) -> None:
        self._ws_pump()
        if self._ws_replan is not None:
            self._ws_replan.set()

    def _ws_pump(self) -> None:
        """Queue, for every subscription, the candles closed since its last event."""
        if not self._ws_conns:
            return
        now = self.now()
        # One /klines computation per stream and pump, however many connections share it.
        pages: dict[tuple[str, int], list[Bar]] = {}
        for conn in list(self._ws_conns):
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
                    self._ws_push(conn, sub, bar, now)

    async def _ws_clock(self, replan: asyncio.Event) -> None:
        """With the clock running, sleep until the next candle closes (or 2 s) and push."""
        while True:
            try:
                await asyncio.wait_for(replan.wait(), timeout=self._ws_next_push_s())
                replan.clear()  # clock, speed or streams changed: plan again
            except TimeoutError:
                try:
                    self._ws_pump()
                except Exception:  # a bad push must not stop the clock of every stream
                    log.exception("kline stream push failed")

    def _ws_next_push_s(self) -> float | None:
        """Return the real seconds until a stream needs an event; None while the clock stands."""
        with self._lock:
            speed, now = self.clock.speed, self.clock.now()
        subs = [s for c in self._ws_conns for s in c.subs.values()]
        if speed <= 0 or not subs:
            return None
        closes = [s.forming + s.interval_ms for s in subs if s.forming is not None]
        due_ms = min(closes, default=now) - now
        # +1 ms simulated: the clock truncates to whole ms, and waking just before the close
        # would push the same forming candle twice.
        return min(_KLINE_UPDATE_S, max(0.0, (due_ms + 1) / speed / 1000.0))

    async def _close_ws_connections(self, *, abort: bool, message: bytes) -> int:
        conns = list(self._ws_conns)
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


# ---------------------------------------------------------------------- kline streams


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


@dataclass(eq=False)  # hashed by identity: the simulator keeps a set of them
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


# ---------------------------------------------------------------------- helpers


def _strip_signature(raw: str) -> str:
    if "signature=" not in raw:
        return raw
    return "&".join(p for p in raw.split("&") if not p.startswith("signature="))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _opt_int(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text in (None, ""):
        return None
    try:
        return int(str(text))
    except ValueError:
        raise BinanceReject(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None


def _int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = _opt_int(params, name)
    if value is None:
        return default
    # Binance clamps limits above the maximum and refuses those below 1.
    if value < lo:
        raise BinanceReject(-1100, f"Illegal characters found in parameter '{name}'.")
    return min(value, hi)


def _p(value: float, decimals: int) -> str:
    return f"{round(value, decimals):.8f}"


def _kline_row(bar: Bar, interval_ms: int, pd: int) -> list[Any]:
    quote = bar.volume * (bar.high + bar.low + bar.close) / 3
    return [
        bar.open_time,
        _p(bar.open, pd),
        _p(bar.high, pd),
        _p(bar.low, pd),
        _p(bar.close, pd),
        f"{bar.volume:.8f}",
        bar.open_time + interval_ms - 1,
        f"{quote:.8f}",
        TRADES_PER_CANDLE,
        f"{bar.volume / 2:.8f}",
        f"{quote / 2:.8f}",
        "0",
    ]


def _best_quotes(market: ReplayMarket, now: int) -> tuple[Decimal, Decimal]:
    price = market.price(now)
    tick = market.spec.tick_size
    if price is None:
        return Decimal(0), Decimal(0)
    bid = (Decimal(repr(price)) / tick).to_integral_value(rounding="ROUND_FLOOR") * tick
    return bid, bid + tick


def _symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    return {
        "symbol": spec.market_id,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(spec.min_price),
                "maxPrice": fmt(spec.max_price),
                "tickSize": fmt(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(spec.min_qty),
                "maxQty": fmt(spec.max_qty),
                "stepSize": fmt(spec.step_size),
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": fmt(Decimal(0)),
                "maxQty": fmt(spec.max_qty),
                "stepSize": fmt(Decimal(0)),
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": fmt(Decimal(9_000_000)),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "NONE"],
    }


def _cancel_wire(order: Any, cancel_client_id: str | None, now: int) -> dict[str, Any]:
    wire = order.to_wire()
    return {
        "symbol": wire["symbol"],
        "origClientOrderId": order.client_order_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id or f"cancel-{order.order_id}",
        "transactTime": now,
        "price": wire["price"],
        "origQty": wire["origQty"],
        "executedQty": wire["executedQty"],
        "origQuoteOrderQty": wire["origQuoteOrderQty"],
        "cummulativeQuoteQty": wire["cummulativeQuoteQty"],
        "status": wire["status"],
        "timeInForce": wire["timeInForce"],
        "type": wire["type"],
        "side": wire["side"],
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


# ---------------------------------------------------------------------- running it


@contextmanager
def run_simulator_in_thread(
    data: Mapping[str, pa.Table | str | Path] | pa.Table | str | Path | None = None,
    *,
    simulator: ExchangeSimulator | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **kwargs: Any,
) -> Iterator[ExchangeSimulator]:
    """Run a simulator in a background thread with its own event loop; yield it once serving.

    Pass either ``data`` plus :class:`ExchangeSimulator` keyword arguments, or a ready
    ``simulator``.  ``sim.base_url`` is set when the block starts; the server stops on exit.
    """
    if simulator is None:
        if data is None:
            raise InvalidInputError("data", "give candles or a ready simulator")
        simulator = ExchangeSimulator(data, **kwargs)
    sim = simulator
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start(host, port))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(sim.stop())
            loop.close()

    thread = threading.Thread(target=serve, name="exchange-simulator", daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def ws_url_for(base_url: str) -> str:
    """Return the kline stream URL of a simulator serving at ``base_url`` (``ws://host:port/ws``)."""
    root = base_url.rstrip("/")
    scheme, sep, rest = root.partition("://")
    if not sep:
        raise InvalidInputError("base_url", f"expected http(s)://host:port, got {base_url!r}")
    return ("wss" if scheme == "https" else "ws") + "://" + rest.split("/", 1)[0] + "/ws"


def ccxt_binance_for(
    base_url: str,
    *,
    api_key: str | None = None,
    secret: str | None = None,
    async_: bool = False,
    timeout_ms: int = 10_000,
    enable_rate_limit: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """Return ccxt's real ``binance`` client (sync, or ``async_support``) aimed at ``base_url``.

    Every API root of the class (``public``, ``private``, ``sapi``, ...) is rewritten to the
    simulator, keeping its path (``/api/v3``, ``/sapi/v1``).  Options keep ``load_markets`` on the
    spot ``exchangeInfo`` only: ``fetchMarkets.types = ["spot"]``, no margin pairs, no currencies
    (a sapi call), no time-difference adjustment (signed timestamps must be the real clock).
    """
    if async_:
        import ccxt.async_support as ccxt_mod
    else:
        import ccxt as ccxt_mod

    return _binance_client(
        ccxt_mod.binance, base_url, api_key, secret, timeout_ms, enable_rate_limit, options
    )


def ccxt_pro_binance_for(
    base_url: str,
    *,
    api_key: str | None = None,
    secret: str | None = None,
    timeout_ms: int = 10_000,
    enable_rate_limit: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """Return ``ccxt.pro``'s real ``binance`` client aimed at ``base_url``, streams included.

    REST roots are rewritten as :func:`ccxt_binance_for` does; every WebSocket root
    (``urls["api"]["ws"]``: spot, margin, futures, ``ws-api``) becomes ``ws://host:port`` plus its
    path, so ``watch_ohlcv`` connects to the simulator's ``/ws/<n>``.  Only spot markets are
    loaded, which also settles ccxt's spot-or-contract guess for the stream's market id (it tells
    them apart by ``/stream`` in Binance's host name).
    """
    import ccxt.pro as ccxt_pro

    exchange = _binance_client(
        ccxt_pro.binance, base_url, api_key, secret, timeout_ms, enable_rate_limit, options
    )
    ws_root = ws_url_for(base_url).removesuffix("/ws")

    def rewrite(urls: dict[str, Any]) -> None:
        for name, url in list(urls.items()):
            if isinstance(url, dict):
                rewrite(url)
            elif isinstance(url, str) and "://" in url:
                urls[name] = ws_root + "/" + url.split("://", 1)[1].partition("/")[2].rstrip("/")

    rewrite(exchange.urls["api"]["ws"])
    return exchange


def _binance_client(
    klass: Any,
    base_url: str,
    api_key: str | None,
    secret: str | None,
    timeout_ms: int,
    enable_rate_limit: bool,
    options: Mapping[str, Any] | None,
) -> Any:
    config: dict[str, Any] = {
        "timeout": timeout_ms,
        "enableRateLimit": enable_rate_limit,
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
            "adjustForTimeDifference": False,
            **dict(options or {}),
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    exchange = klass(config)
    root = base_url.rstrip("/")
    api_urls = exchange.urls["api"]
    for name, url in list(api_urls.items()):
        # String roots only: ccxt.pro's "ws" is a dict of stream roots, rewritten by the caller.
        if isinstance(url, str) and "://" in url:
            path = "/" + url.split("://", 1)[1].partition("/")[2]
            api_urls[name] = root + path.rstrip("/")
    return exchange
