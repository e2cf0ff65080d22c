"""The simulated exchange itself: its Python API, the HTTP app and its routes, auth and faults.

:class:`ExchangeSimulator` owns the clock, the markets, the matching engine and the fault switches,
all behind one lock, and serves them over aiohttp: Binance's public endpoints
(:mod:`~cryptoorchestrator.platform.exchange.sim.public`), its signed ones
(:mod:`~cryptoorchestrator.platform.exchange.sim.signed`, authenticated by
:mod:`~cryptoorchestrator.platform.exchange.sim.auth`), the kline streams
(:mod:`~cryptoorchestrator.platform.exchange.sim.ws`) and the admin endpoints under ``/_sim/``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from aiohttp import web

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.sim.accounts import (
    SimAccount,
    SimAccountSpec,
    select_orders,
)
from cryptoorchestrator.platform.exchange.sim.auth import authenticate, request_params
from cryptoorchestrator.platform.exchange.sim.clock import SimClock
from cryptoorchestrator.platform.exchange.sim.faults import FaultState
from cryptoorchestrator.platform.exchange.sim.market import ReplayMarket, SymbolSpec, build_markets
from cryptoorchestrator.platform.exchange.sim.matching import MatchingEngine
from cryptoorchestrator.platform.exchange.sim.public import PublicEndpoints
from cryptoorchestrator.platform.exchange.sim.ratelimit import WeightLimiter
from cryptoorchestrator.platform.exchange.sim.signed import SignedEndpoints
from cryptoorchestrator.platform.exchange.sim.wire import (
    MSG_RATE_LIMIT,
    BinanceReject,
    error_response,
    fmt,
    json_response,
)
from cryptoorchestrator.platform.exchange.sim.ws import KlineStreams

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SignedHandler = Callable[[SimAccount, dict[str, str], int], Any]


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
    weight_limit, weight_window_s
        Request weight per IP per window, enforced as Binance does (429, then 418 bans; see
        :mod:`~cryptoorchestrator.platform.exchange.sim.ratelimit`); None: no limit and no
        ``X-MBX-USED-WEIGHT-*`` header.
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
        weight_limit: float | None = None,
        weight_window_s: float = 60.0,
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
        self.weights = (
            WeightLimiter(weight_limit, weight_window_s) if weight_limit is not None else None
        )
        self._lock = threading.RLock()
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.base_url = ""
        self.public = PublicEndpoints(self.engine, self._synced_now)
        self.signed = SignedEndpoints(self.engine)
        self.streams = KlineStreams(self.markets, self._clock_state)

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
        self.streams.kick()
        return now

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` and fill what the prices reached; return now."""
        with self._lock:
            self._sync()
            self.clock.advance(ms)
            now = self._sync()
        self.streams.kick()
        return now

    def set_speed(self, speed: float) -> None:
        """Run the clock at ``speed`` x real time from now on (0 freezes it)."""
        with self._lock:
            self._sync()
            self.clock.set_speed(speed)
        self.streams.kick()

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

    def _clock_state(self) -> tuple[int, float]:
        with self._lock:
            return self.clock.now(), self.clock.speed

    def _synced_now(self) -> int:
        with self._lock:
            return self._sync()

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
        self.streams.start()
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; hanging (timeout-fault) requests and stream connections are released."""
        if self._stopping is not None:
            self._stopping.set()
        await self.streams.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drop_ws_connections(self, *, abort: bool = False) -> int:
        """Close every stream connection (in the server's loop); return how many there were.

        ``abort`` cuts the TCP connections without a close frame (a network failure); otherwise
        they are closed with 1001, as Binance closes connections after 24 hours.
        """
        return await self.streams.close_connections(
            abort=abort, message=b"dropped by the simulator"
        )

    # ------------------------------------------------------------------ HTTP plumbing

    def _add_routes(self, app: web.Application) -> None:
        get, post, delete = app.router.add_get, app.router.add_post, app.router.add_delete
        public, signed = self.public, self.signed
        for prefix in ("/api/v3", "/api/v1"):
            get(f"{prefix}/ping", public.ping)
            get(f"{prefix}/time", public.time)
        get("/api/v3/exchangeInfo", public.exchange_info)
        get("/api/v3/klines", public.klines)
        get("/api/v3/uiKlines", public.klines)
        get("/api/v3/ticker/24hr", public.ticker_24hr)
        get("/api/v3/ticker/price", public.ticker_price)
        get("/api/v3/ticker/bookTicker", public.book_ticker)
        get("/api/v3/avgPrice", public.avg_price)
        get("/api/v3/depth", public.depth)
        get("/api/v3/trades", public.trades)
        get("/api/v3/historicalTrades", public.trades)
        get("/api/v3/aggTrades", public.agg_trades)
        get("/api/v3/account", self._signed(signed.account))
        post("/api/v3/order", self._signed(self._new_order))
        post("/api/v3/order/test", self._signed(signed.test_order))
        get("/api/v3/order", self._signed(signed.get_order))
        delete("/api/v3/order", self._signed(signed.cancel_order))
        get("/api/v3/openOrders", self._signed(signed.open_orders))
        delete("/api/v3/openOrders", self._signed(signed.cancel_all))
        get("/api/v3/allOrders", self._signed(signed.all_orders))
        get("/api/v3/myTrades", self._signed(signed.my_trades))
        get("/_sim/clock", self._admin_clock)
        post("/_sim/clock", self._admin_clock)
        get("/_sim/faults", self._admin_faults)
        post("/_sim/faults", self._admin_faults)
        get("/_sim/orders", self._admin_orders)
        get("/_sim/balances", self._admin_balances)
        get("/_sim/stats", self._admin_stats)
        get("/_sim/weights", self._admin_weights)
        get("/_sim/ws", self._admin_ws)
        post("/_sim/ws", self._admin_ws)
        get("/ws", self.streams.handle)
        get("/ws/{tail:.*}", self.streams.handle)

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
        verdict = None
        if self.weights is not None and path.startswith("/api/"):
            verdict = self.weights.charge(request.remote or "", request.method, path, request.query)
            if verdict.status != 200:
                return json_response(
                    {"code": -1003, "msg": MSG_RATE_LIMIT},
                    status=verdict.status,
                    headers={
                        "Retry-After": str(verdict.retry_after_s),
                        verdict.header: str(int(verdict.used)),
                    },
                )
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
            return json_response(
                {"code": -1003, "msg": MSG_RATE_LIMIT},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        if action == "fail":
            return web.Response(status=fail_status, text="Service Unavailable")
        try:
            response = await handler(request)
        except BinanceReject as exc:
            response = error_response(exc.code, exc.msg, exc.status)
        except InvalidInputError as exc:
            response = error_response(-1100, str(exc))
        if verdict is not None and not response.prepared:
            response.headers[verdict.header] = str(int(verdict.used))
        return response

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

    def _signed(self, handler: _SignedHandler) -> _Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            params, raw_query, raw_body = await request_params(request)
            with self._lock:
                account = authenticate(
                    self.engine.accounts, request.headers, params, raw_query, raw_body
                )
                now = self._sync()
                result = handler(account, params, now)
            if isinstance(result, web.StreamResponse):
                return result
            if callable(result):
                return await result(request)
            return json_response(result)

        return wrapped

    def _new_order(self, account: SimAccount, params: dict[str, str], now: int) -> Any:
        answer = self.signed.new_order(account, params, now)
        if self.faults.drop_next_orders > 0 and self.faults.applies_to("/api/v3/order"):
            self.faults.drop_next_orders -= 1
            return _dropped_answer(self.faults.drop_mode)
        return answer

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
                return json_response({"error": str(exc)}, status=400)
        with self._lock:
            return json_response({"now": self._sync(), "speed": self.clock.speed})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _json_body(request)
            try:
                if body.pop("clear", False):
                    self.clear_faults()
                self.set_faults(**body)
            except InvalidInputError as exc:
                return json_response({"error": str(exc)}, status=400)
        with self._lock:
            return json_response(self.faults.to_dict())

    async def _admin_orders(self, request: web.Request) -> web.Response:
        return json_response(self.orders(request.query.get("apiKey")))

    async def _admin_balances(self, request: web.Request) -> web.Response:
        key = request.query.get("apiKey") or self.api_key
        if key not in self.engine.accounts:
            return json_response({"error": "unknown apiKey"}, status=404)
        bal = self.balances(key)
        return json_response({a: {"free": fmt(f), "locked": fmt(lk)} for a, (f, lk) in bal.items()})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        with self._lock:
            return json_response(dict(self.stats))

    async def _admin_weights(self, request: web.Request) -> web.Response:
        """Answer the weight limit's figures: most served in a window, 429s and 418s sent."""
        if self.weights is None:
            return json_response({"limit": None})
        return json_response(self.weights.stats())

    async def _admin_ws(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _json_body(request)
            if body.get("drop"):
                dropped = await self.drop_ws_connections(abort=bool(body.get("abort", False)))
                return json_response({"dropped": dropped})
        return json_response(self.streams.stats())


def _dropped_answer(mode: str) -> _Handler:
    """Return a handler that loses the answer of an order already booked (a fault)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if mode == "close":
            transport = request.transport
            if transport is not None:
                transport.abort()
            # Nothing can be sent any more; aiohttp discards the response.
            return web.Response(status=503)
        return web.Response(status=503, text="Service Unavailable")

    return answer


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body
