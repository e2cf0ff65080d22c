"""The live execution client: any exchange ccxt supports, through ``ccxt.async_support``.

Every call goes through the account's circuit breaker (:mod:`.circuit`), and ccxt's exceptions
are mapped onto the platform's (:mod:`.errors_map`).  Reads are retried with exponential
backoff when they failed for a retryable reason.  Orders are never retried blindly:

1. the order is sent once with our client order id;
2. if the answer is lost (timeout, 5xx, dropped connection, rate limit), the order is looked up
   by that client order id (Binance: ``GET /api/v3/order?origClientOrderId=...``);
3. found: that is the answer.  Not found: we wait until the original request can no longer be
   executed (the exchange drops signed requests older than ``recvWindow``, so after
   ``settle_s`` a late arrival is impossible), ask once more, and only then send it again with
   the *same* client order id, so the exchange itself refuses a duplicate;
4. if the exchange cannot be asked at all, :class:`~cryptoorchestrator.platform.errors.
   OrderStateUnknownError` tells the bot to keep the intent unconfirmed and reconcile later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from cryptoorchestrator.platform.errors import (
    AuthenticationError,
    CircuitOpenError,
    FatalExchangeError,
    InsufficientFundsError,
    InvalidInputError,
    InvalidOrderError,
    OrderNotFoundError,
    OrderStateUnknownError,
    RetryableExchangeError,
)
from cryptoorchestrator.platform.exchange.budget_client import registry as budget_registry
from cryptoorchestrator.platform.exchange.ccxt_factory import build_ccxt_client
from cryptoorchestrator.platform.exchange.circuit import CircuitBreaker, account_key, registry
from cryptoorchestrator.platform.exchange.errors_map import is_ccxt_error, map_ccxt_error
from cryptoorchestrator.platform.exchange.execution import (
    Balance,
    Candle,
    ExchangeOrder,
    ExecutionClient,
    Fill,
    MarketInfo,
    OrderRejected,
    OrderRequest,
    PreparedOrder,
    Ticker,
    prepare_order,
    to_decimal,
)
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType, normalize_symbol

T = TypeVar("T")

# ccxt's precision modes (ccxt.base.decimal_to_precision), repeated to keep this import light.
_DECIMAL_PLACES = 2
_TICK_SIZE = 4


@dataclass(frozen=True)
class RetryPolicy:
    """How reads (and lookups of lost orders) are retried.

    Parameters
    ----------
    attempts
        Tries in all, the first included.
    base_delay_s, max_delay_s, factor
        Exponential backoff between tries: ``base * factor**n``, capped.
    """

    attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Return the pause after failed try number ``attempt`` (0-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * self.factor**attempt))


class CcxtExecutionClient(ExecutionClient):
    """:class:`ExecutionClient` over a ``ccxt.async_support`` exchange instance.

    Parameters
    ----------
    exchange
        A ccxt async exchange (with credentials for private calls).
    account_key
        Registry key of the account (``binance:7``); default ``<exchange id>:public``.
    breaker
        The circuit breaker; default: the registry's breaker of ``account_key``.
    retry
        Retry policy of reads and lookups.
    settle_s
        Seconds after sending an order past which the exchange can no longer execute it (its
        ``recvWindow`` plus a margin); default from the exchange's ``recvWindow`` option, or 11.
    sleep
        Awaitable pause (tests may pass a faster one).
    """

    def __init__(
        self,
        exchange: Any,
        *,
        account_key: str | None = None,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        settle_s: float | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.exchange = exchange
        self.account_key = account_key or f"{exchange.id}:public"
        self.breaker = breaker if breaker is not None else registry.get(self.account_key)
        self.retry = retry or RetryPolicy()
        if settle_s is None:
            recv_ms = (getattr(exchange, "options", None) or {}).get("recvWindow", 10_000)
            settle_s = float(recv_ms) / 1000.0 + 1.0
        self.settle_s = float(settle_s)
        self._sleep = sleep
        self._markets: dict[str, MarketInfo] | None = None
        options = getattr(exchange, "options", None)
        if isinstance(options, dict):
            # Reconciliation after a restart asks for every open order at once: a deliberate,
            # rare call, so ccxt's "heavier rate-limit weight" warning must not refuse it.
            options["warnOnFetchOpenOrdersWithoutSymbol"] = False
            per_call = options.setdefault("fetchOpenOrders", {})
            if isinstance(per_call, dict):
                per_call["warnWithoutSymbol"] = False

    @property
    def books_submitted_mark(self) -> bool:
        """False: the exchange is not our database, the bot marks its intent before sending."""
        return False

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_exchange(
        cls,
        exchange_id: str,
        *,
        api_key: str | None = None,
        secret: str | None = None,
        password: str | None = None,
        api_url: str | None = None,
        account_id: int | str | None = None,
        options: Mapping[str, Any] | None = None,
        timeout_ms: int = 10_000,
        enable_rate_limit: bool = True,
        **kwargs: Any,
    ) -> CcxtExecutionClient:
        """Build the client of one account from its exchange id and (decrypted) credentials.

        Parameters
        ----------
        exchange_id
            ccxt's id (``binance``, ``kraken``...).
        api_key, secret, password
            Credentials; none for a public (market-data) client.
        api_url
            Another root for every API URL (the simulator, a testnet).
        account_id
            Our account id, for the circuit-breaker key.
        options
            Extra ccxt options.
        kwargs
            Passed to the constructor (``retry``, ``breaker``, ``settle_s``, ``sleep``).

        Raises
        ------
        InvalidInputError
            If ccxt does not know ``exchange_id`` or ``api_url`` is not a plain http(s) URL.
        """
        exchange = build_ccxt_client(
            exchange_id,
            api_url,
            kind="async",
            api_key=api_key,
            secret=secret,
            password=password,
            options=options,
            timeout_ms=timeout_ms,
            enable_rate_limit=enable_rate_limit,
        )
        # Bot processes share one request budget per exchange, IP and API key (if configured).
        budget_registry.attach(exchange, exchange_id, api_url, api_key)
        key = account_key(exchange_id, account_id)
        client = cls(exchange, account_key=key, **kwargs)
        client.market_data_key = f"{exchange_id}@{api_url or 'default'}"
        return client

    # ------------------------------------------------------------------ plumbing

    async def _once(self, action: str, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run one exchange call through the breaker, mapping ccxt's errors."""

        async def run() -> T:
            try:
                return await method(*args)
            except Exception as exc:
                if is_ccxt_error(exc):
                    raise map_ccxt_error(exc, action=action) from exc
                raise

        return await self.breaker.call(run)

    async def _read(self, action: str, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a call that is safe to repeat, retrying retryable failures with backoff."""
        attempts = max(1, self.retry.attempts)
        for attempt in range(attempts):
            try:
                return await self._once(action, method, *args)
            except CircuitOpenError:
                raise
            except RetryableExchangeError:
                if attempt + 1 >= attempts:
                    raise
                await self._sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ market data

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        """Return every market by unified symbol (cached; ``reload`` asks the exchange again)."""
        if self._markets is not None and not reload:
            return self._markets
        raw = await self._read("load markets", self.exchange.load_markets, reload)
        mode = getattr(self.exchange, "precisionMode", _TICK_SIZE)
        self._markets = {sym: market_info(m, mode) for sym, m in raw.items()}
        return self._markets

    async def fetch_balances(self) -> dict[str, Balance]:
        """Return the account's non-zero balances by asset."""
        raw = await self._read("fetch balance", self.exchange.fetch_balance)
        return parse_balances(raw)

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Return candles, oldest first."""
        rows = await self._read(
            f"fetch ohlcv {symbol}",
            self.exchange.fetch_ohlcv,
            normalize_symbol(symbol),
            timeframe,
            since_ms,
            limit,
        )
        return [
            Candle(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5] or 0))
            for r in rows
        ]

    async def fetch_ticker(self, symbol: str) -> Ticker:
        """Return the latest prices of ``symbol``."""
        sym = normalize_symbol(symbol)
        raw = await self._read(f"fetch ticker {sym}", self.exchange.fetch_ticker, sym)
        return Ticker(
            symbol=sym,
            last=to_decimal(raw.get("last")),
            bid=to_decimal(raw.get("bid")),
            ask=to_decimal(raw.get("ask")),
            timestamp_ms=raw.get("timestamp"),
        )

    # ------------------------------------------------------------------ orders

    async def create_order(self, request: OrderRequest) -> ExchangeOrder | OrderRejected:
        """Place an order exactly once (see the module docstring for the lost-answer rules)."""
        market = await self.market(request.symbol)
        reference: Decimal | None = None
        if request.type is OrderType.MARKET and market.min_notional:
            reference = (await self.fetch_ticker(request.symbol)).price_for(request.side)
        prepared = prepare_order(market, request, reference)
        if isinstance(prepared, OrderRejected):
            return prepared
        return await self._submit(prepared, market)

    async def _submit(
        self, prepared: PreparedOrder, market: MarketInfo
    ) -> ExchangeOrder | OrderRejected:
        request = prepared.request
        cid = request.client_order_id
        action = f"create order {request.symbol} {cid}"
        sends = max(1, self.retry.attempts)
        last_error: RetryableExchangeError | None = None
        for send in range(sends):
            sent_at = time.monotonic()
            try:
                raw = await self._once(
                    action,
                    self.exchange.create_order,
                    request.symbol,
                    *_wire_type_price(prepared),
                )
                return parse_order(raw, market, request)
            except CircuitOpenError:
                if send == 0:
                    raise  # nothing was sent
                raise OrderStateUnknownError(
                    f"{action}: circuit opened while resolving a lost answer",
                    client_order_id=cid,
                ) from None
            except (InsufficientFundsError, InvalidOrderError) as err:
                if send > 0 and "duplicate" in str(err).lower():
                    # Our earlier send did arrive after all: the exchange refused the copy.
                    found = await self._lookup(request.symbol, cid, market, request)
                    if found is not None:
                        return found
                return OrderRejected(
                    cid,
                    request.symbol,
                    err.code,
                    str(err),
                    exchange_message=err.exchange_message,
                    sent=True,
                )
            except RetryableExchangeError as err:
                last_error = err
            found = await self._resolve_lost(request, market, sent_at, last_error)
            if found is not None:
                return found
            # Proven absent: send again with the same client order id.
        raise RetryableExchangeError(
            f"{action}: not placed after {sends} attempts (each proven absent)",
            exchange_message=last_error.exchange_message if last_error else None,
        )

    async def _resolve_lost(
        self,
        request: OrderRequest,
        market: MarketInfo,
        sent_at: float,
        error: RetryableExchangeError,
    ) -> ExchangeOrder | None:
        """Return the order whose answer was lost, or None once it provably does not exist."""
        cid = request.client_order_id
        try:
            found = await self._lookup(request.symbol, cid, market, request)
            if found is not None:
                return found
            # Absent now; the request may still be in flight inside the exchange.  Once its
            # recvWindow has passed, the exchange must refuse it, so a second "absent" is final.
            wait = self.settle_s - (time.monotonic() - sent_at)
            if wait > 0:
                await self._sleep(wait)
            return await self._lookup(request.symbol, cid, market, request)
        except (RetryableExchangeError, OrderStateUnknownError) as lookup_error:
            raise OrderStateUnknownError(
                f"create order {request.symbol} {cid}: the answer was lost ({error}) and the "
                f"order could not be looked up ({lookup_error}); reconcile by client order id",
                client_order_id=cid,
                exchange_message=error.exchange_message,
            ) from lookup_error

    async def _lookup(
        self, symbol: str, cid: str, market: MarketInfo, request: OrderRequest | None = None
    ) -> ExchangeOrder | None:
        try:
            raw = await self._read(
                f"fetch order {symbol} {cid}",
                self.exchange.fetch_order,
                None,
                symbol,
                {"clientOrderId": cid},
            )
        except OrderNotFoundError:
            return None
        return parse_order(raw, market, request)

    async def fetch_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> ExchangeOrder | None:
        """Return an order by exchange id or client order id; None when it does not exist."""
        if not order_id and not client_order_id:
            raise InvalidInputError("order_id", "give an exchange order id or a client order id")
        sym = normalize_symbol(symbol)
        market = await self.market(sym)
        if client_order_id and not order_id:
            return await self._lookup(sym, client_order_id, market)
        try:
            raw = await self._read(
                f"fetch order {sym} {order_id}", self.exchange.fetch_order, order_id, sym, {}
            )
        except OrderNotFoundError:
            return None
        return parse_order(raw, market)

    async def cancel_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> ExchangeOrder | None:
        """Cancel an order; return its state afterwards, None if it does not exist."""
        if not order_id and not client_order_id:
            raise InvalidInputError("order_id", "give an exchange order id or a client order id")
        sym = normalize_symbol(symbol)
        market = await self.market(sym)
        params = {} if order_id else {"clientOrderId": client_order_id}
        try:
            # Cancelling is idempotent (a second cancel is refused, not doubled): safe to retry.
            raw = await self._read(
                f"cancel order {sym} {order_id or client_order_id}",
                self.exchange.cancel_order,
                order_id,
                sym,
                params,
            )
        except AuthenticationError:
            raise
        except FatalExchangeError as err:
            # Unknown or already final (filled, cancelled): report what the order is now.
            current = await self.fetch_order(
                sym, order_id=order_id, client_order_id=client_order_id
            )
            if current is None or current.is_final:
                return current
            raise err
        order = parse_order(raw, market)
        if order.status is not OrderStatus.CANCELED:
            # Some exchanges answer a cancel with a bare acknowledgement: ask for the truth.
            refreshed = await self.fetch_order(sym, order_id=order.order_id)
            return refreshed or order
        return order

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """Return the open orders (of ``symbol``, or of every market)."""
        sym = normalize_symbol(symbol) if symbol else None
        raw = await self._read(
            f"fetch open orders {sym or ''}", self.exchange.fetch_open_orders, sym
        )
        markets = await self.load_markets()
        return [parse_order(o, markets.get(o.get("symbol") or "")) for o in raw]

    async def fetch_my_trades(
        self,
        symbol: str,
        since_ms: int | None = None,
        limit: int | None = None,
        *,
        order_id: str | None = None,
    ) -> list[Fill]:
        """Return the account's fills in ``symbol``, oldest first (of one order if given)."""
        sym = normalize_symbol(symbol)
        market = await self.market(sym)
        if order_id is not None and self.exchange.has.get("fetchOrderTrades"):
            raw = await self._read(
                f"fetch order trades {sym} {order_id}",
                self.exchange.fetch_order_trades,
                order_id,
                sym,
                since_ms,
                limit,
            )
        else:
            raw = await self._read(
                f"fetch my trades {sym}", self.exchange.fetch_my_trades, sym, since_ms, limit
            )
        fills = [parse_fill(t, market) for t in raw]
        if order_id is not None:
            fills = [f for f in fills if f.order_id == str(order_id)]
        return sorted(fills, key=lambda f: (f.timestamp_ms, f.trade_id))

    async def close(self) -> None:
        """Close the exchange's HTTP session."""
        await self.exchange.close()


# ---------------------------------------------------------------------- parsing


def _step(value: Any, mode: int) -> Decimal | None:
    if value is None:
        return None
    if mode == _TICK_SIZE:
        return to_decimal(value)
    if mode == _DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(value))
    return None  # significant digits: no fixed step; the exchange rounds


def market_info(market: Mapping[str, Any], precision_mode: int = _TICK_SIZE) -> MarketInfo:
    """Return a ccxt market's precision and limits as a :class:`MarketInfo`."""
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}

    def limit(kind: str, bound: str) -> Decimal | None:
        return to_decimal((limits.get(kind) or {}).get(bound))

    return MarketInfo(
        symbol=market["symbol"],
        base=market.get("base") or market["symbol"].split("/")[0],
        quote=market.get("quote") or market["symbol"].split("/")[1].split(":")[0],
        amount_step=_step(precision.get("amount"), precision_mode),
        price_tick=_step(precision.get("price"), precision_mode),
        min_amount=limit("amount", "min"),
        max_amount=limit("amount", "max"),
        min_notional=limit("cost", "min"),
        min_price=limit("price", "min"),
        max_price=limit("price", "max"),
        active=market.get("active") is not False,
    )


def parse_balances(raw: Mapping[str, Any]) -> dict[str, Balance]:
    """Return a ccxt ``fetch_balance`` answer as Decimal balances (zero totals left out)."""
    out: dict[str, Balance] = {}
    free_map = raw.get("free") or {}
    used_map = raw.get("used") or {}
    for asset in sorted(set(free_map) | set(used_map)):
        free = to_decimal(free_map.get(asset)) or Decimal(0)
        used = to_decimal(used_map.get(asset)) or Decimal(0)
        if free or used:
            out[asset] = Balance(asset, free, used)
    return out


_STATUS = {
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "cancelled": OrderStatus.CANCELED,
    "expired": OrderStatus.CANCELED,
    "rejected": OrderStatus.REJECTED,
}


def _info_decimal(info: Any, key: str, fallback: Any) -> Decimal | None:
    # Exchanges' raw answers keep exact strings (Binance: "0.00120000"); ccxt's floats may not.
    if isinstance(info, Mapping) and isinstance(info.get(key), str) and info[key] != "":
        return Decimal(info[key])
    return to_decimal(fallback)


def _wire_type_price(prepared: PreparedOrder) -> tuple[str, str, str, str | None, dict[str, Any]]:
    """Return ccxt's ``(type, side, amount, price, params)`` for ``prepared``.

    A stop-loss goes as Binance spot's ``STOP_LOSS`` (a market order once the price reaches
    ``stopPrice``), which ccxt's binance class sends as it is given.
    """
    request = prepared.request
    params: dict[str, Any] = {"clientOrderId": request.client_order_id}
    price = str(prepared.price) if prepared.price is not None else None
    otype = request.type.value
    if request.type is OrderType.STOP_LOSS:
        otype, price = "STOP_LOSS", None
        params["stopPrice"] = str(prepared.price)
    return otype, request.side.value, str(prepared.amount), price, params


def parse_order(
    raw: Mapping[str, Any], market: MarketInfo | None, request: OrderRequest | None = None
) -> ExchangeOrder:
    """Return a ccxt order as an :class:`ExchangeOrder` with exact amounts."""
    info = raw.get("info") or {}
    symbol = raw.get("symbol") or (request.symbol if request else "")
    amount = _info_decimal(info, "origQty", raw.get("amount"))
    if amount is None:
        amount = request.amount if request else Decimal(0)
    filled = _info_decimal(info, "executedQty", raw.get("filled")) or Decimal(0)
    cost = _info_decimal(info, "cummulativeQuoteQty", raw.get("cost"))
    status_text = raw.get("status")
    if status_text in _STATUS:
        status = _STATUS[status_text]
    elif status_text == "open":
        status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.OPEN
    else:
        status = OrderStatus.SUBMITTED
    otype = raw.get("type") or (request.type.value if request else "limit")
    stop_price = None
    if isinstance(info, Mapping) and str(info.get("type", "")).upper() == "STOP_LOSS":
        # ccxt reports Binance's spot STOP_LOSS as a "market" order with a trigger price.
        otype = OrderType.STOP_LOSS.value
        stop_price = _info_decimal(info, "stopPrice", raw.get("triggerPrice"))
    side = raw.get("side") or (request.side.value if request else "buy")
    price = _info_decimal(info, "price", raw.get("price"))
    if otype in (OrderType.MARKET.value, OrderType.STOP_LOSS.value) or (
        price is not None and price == 0
    ):
        price = None
    average = None
    if filled > 0 and cost:
        average = cost / filled
        if market is not None and market.price_tick:
            # Many fills at tick prices average to a long fraction; 12 places is exact enough.
            average = average.quantize(Decimal("1e-12")).normalize()
    elif raw.get("average"):
        average = to_decimal(raw.get("average"))
    order_id = str(raw.get("id"))
    fills = tuple(
        parse_fill(
            {
                **t,
                "order": t.get("order") or order_id,
                "side": t.get("side") or side,
                "symbol": t.get("symbol") or symbol,
                "timestamp": t.get("timestamp") or raw.get("timestamp"),
            },
            market,
        )
        for t in raw.get("trades") or ()
    )
    fee, fee_currency = _order_fee(raw, fills)
    return ExchangeOrder(
        order_id=order_id,
        # A cancel's answer names the cancel request's own id; the order's is origClientOrderId.
        client_order_id=(info.get("origClientOrderId") if isinstance(info, Mapping) else None)
        or raw.get("clientOrderId"),
        symbol=symbol,
        side=OrderSide(side),
        type=OrderType(otype) if otype in tuple(OrderType) else OrderType.LIMIT,
        status=status,
        amount=amount,
        filled=filled,
        price=price,
        average_price=average,
        cost=cost,
        timestamp_ms=raw.get("timestamp"),
        fills=fills,
        fee=fee,
        fee_currency=fee_currency,
        stop_price=stop_price,
    )


def _order_fee(
    raw: Mapping[str, Any], fills: tuple[Fill, ...]
) -> tuple[Decimal | None, str | None]:
    currencies = {f.fee_currency for f in fills}
    if fills and len(currencies) == 1:
        return sum((f.fee for f in fills), Decimal(0)), currencies.pop()
    fee = raw.get("fee") or {}
    if fee.get("cost") is not None:
        return to_decimal(fee["cost"]), fee.get("currency")
    return None, None


def parse_fill(raw: Mapping[str, Any], market: MarketInfo | None = None) -> Fill:
    """Return a ccxt trade (of ``fetch_my_trades`` or an order's ``trades``) as a :class:`Fill`."""
    info = raw.get("info") or {}
    price = _info_decimal(info, "price", raw.get("price")) or Decimal(0)
    amount = _info_decimal(info, "qty", raw.get("amount")) or Decimal(0)
    fee = raw.get("fee") or {}
    fee_cost = _info_decimal(info, "commission", fee.get("cost")) or Decimal(0)
    fee_currency = (info.get("commissionAsset") if isinstance(info, Mapping) else None) or fee.get(
        "currency"
    )
    maker = raw.get("takerOrMaker")
    return Fill(
        trade_id=str(raw.get("id") if raw.get("id") is not None else info.get("tradeId")),
        order_id=str(raw.get("order")),
        symbol=raw.get("symbol") or (market.symbol if market else ""),
        side=OrderSide(raw.get("side") or "buy"),
        price=price,
        amount=amount,
        fee=fee_cost,
        fee_currency=fee_currency,
        timestamp_ms=int(raw.get("timestamp") or 0),
        is_maker=None if maker is None else maker == "maker",
    )
