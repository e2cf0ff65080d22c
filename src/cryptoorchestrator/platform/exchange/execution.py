"""The one execution interface bots trade through, its value types, and order preparation.

Two implementations exist: :class:`~cryptoorchestrator.platform.exchange.ccxt_client.
CcxtExecutionClient` (live, any exchange ccxt supports) and :class:`~cryptoorchestrator.platform.
exchange.paper.PaperBroker` (virtual balances in the database, fills against live prices).

Conventions
-----------
* Amounts, prices, fees and balances are exact :class:`~decimal.Decimal` values.  Candles stay
  floats: they feed float64 strategy kernels, exactly as in backtests.
* Our client order id is the exchange's client order id (Binance ``newClientOrderId``), so an
  order whose answer was lost can always be found again, and a bot that restarts can reconcile
  its intents by that id.
* An order the exchange (or our own pre-send check) refuses is a value, :class:`OrderRejected`,
  with a reason; exceptions (:mod:`cryptoorchestrator.platform.errors`) mean infrastructure
  failure, bad credentials or a bug.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType, normalize_symbol

#: Client order ids every exchange we know accepts (Binance's rule, the strictest common one).
CLIENT_ORDER_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")

# Rejection codes (``OrderRejected.code``): ours for pre-send checks, the error's for exchanges.
REJECT_LOT_SIZE = "lot_size"
REJECT_MIN_NOTIONAL = "min_notional"
REJECT_PRICE_FILTER = "price_filter"
REJECT_MARKET_INACTIVE = "market_inactive"
REJECT_NO_PRICE = "no_reference_price"
#: A stop order whose stop price the market is already through (Binance refuses it too).
REJECT_WOULD_TRIGGER = "would_trigger"


def to_decimal(value: Any) -> Decimal | None:
    """Return ``value`` as an exact Decimal (floats through their shortest repr), None for None.

    ccxt parses exchange strings into floats; ``repr`` gives back the shortest string that
    round-trips, which is the exchange's own text for every value an exchange prints.
    """
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


# ------------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class MarketInfo:
    """A tradable pair and the filters orders must pass (None: the exchange sets no limit).

    Parameters
    ----------
    symbol
        Unified symbol, ``BTC/USDT``.
    base, quote
        The pair's assets.
    amount_step, price_tick
        Lot step and price tick; amounts and prices are rounded to them.
    min_amount, max_amount
        Lot size limits.
    min_notional
        Smallest ``amount * price`` the exchange accepts.
    min_price, max_price
        Price limits.
    active
        Whether the market trades now.
    """

    symbol: str
    base: str
    quote: str
    amount_step: Decimal | None = None
    price_tick: Decimal | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    min_notional: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    active: bool = True

    def round_amount(self, amount: Decimal) -> Decimal:
        """Return ``amount`` rounded down to the lot step (never buy or sell more than asked)."""
        if self.amount_step is None or self.amount_step <= 0:
            return amount
        return _round_to(amount, self.amount_step, ROUND_DOWN)

    def round_price(self, price: Decimal) -> Decimal:
        """Return ``price`` rounded to the nearest tick."""
        if self.price_tick is None or self.price_tick <= 0:
            return price
        return _round_to(price, self.price_tick, ROUND_HALF_EVEN)


def _round_to(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    units = (value / step).to_integral_value(rounding=rounding)
    # Keep the step's exponent, so 0.00120 prints as the exchange expects (0.00120, not 0.0012E0).
    exponent = step.as_tuple().exponent
    if isinstance(exponent, int) and exponent < 0:
        return (units * step).quantize(step)
    return units * step


@dataclass(frozen=True)
class OrderRequest:
    """An order a bot wants placed; ``client_order_id`` makes it idempotent.

    Raises
    ------
    InvalidInputError
        If the amount or price is not positive, a limit order has no price, a stop-loss order
        has no stop price (or another order has one), or the client order id breaks the
        exchanges' rule ``^[.A-Z:/a-z0-9_-]{1,36}$``.
    """

    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    client_order_id: str
    price: Decimal | None = None
    #: Trigger price of a ``STOP_LOSS`` order (required for it, refused for the others).
    stop_price: Decimal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        object.__setattr__(self, "side", OrderSide(self.side))
        object.__setattr__(self, "type", OrderType(self.type))
        object.__setattr__(self, "amount", Decimal(self.amount))
        if not self.amount.is_finite() or self.amount <= 0:
            raise InvalidInputError("amount", "must be a positive number")
        if self.price is not None:
            object.__setattr__(self, "price", Decimal(self.price))
            assert self.price is not None
            if not self.price.is_finite() or self.price <= 0:
                raise InvalidInputError("price", "must be a positive number")
        if self.type is OrderType.LIMIT and self.price is None:
            raise InvalidInputError("price", "a limit order needs a price")
        if self.stop_price is not None:
            object.__setattr__(self, "stop_price", Decimal(self.stop_price))
            assert self.stop_price is not None
            if not self.stop_price.is_finite() or self.stop_price <= 0:
                raise InvalidInputError("stop_price", "must be a positive number")
        if (self.type is OrderType.STOP_LOSS) != (self.stop_price is not None):
            raise InvalidInputError(
                "stop_price", "a stop-loss order needs a stop price; other orders take none"
            )
        if not CLIENT_ORDER_ID.match(self.client_order_id):
            raise InvalidInputError(
                "client_order_id",
                f"malformed client order id {self.client_order_id!r}",
                allowed="1-36 characters of A-Z a-z 0-9 . : / _ -",
            )


@dataclass(frozen=True)
class Fill:
    """One execution of an order (a row of "my trades")."""

    trade_id: str
    order_id: str
    symbol: str
    side: OrderSide
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str | None
    timestamp_ms: int
    is_maker: bool | None = None

    @property
    def cost(self) -> Decimal:
        """Return ``price * amount`` in the quote asset."""
        return self.price * self.amount


@dataclass(frozen=True)
class ExchangeOrder:
    """An order as the exchange reports it (the answer to create, fetch and cancel).

    ``fills`` holds the executions reported with the answer (Binance reports them for orders
    that filled at once); :meth:`ExecutionClient.fetch_my_trades` is the complete record.
    """

    order_id: str
    client_order_id: str | None
    symbol: str
    side: OrderSide
    type: OrderType
    status: OrderStatus
    amount: Decimal
    filled: Decimal
    price: Decimal | None = None
    average_price: Decimal | None = None
    cost: Decimal | None = None
    timestamp_ms: int | None = None
    fills: tuple[Fill, ...] = ()
    fee: Decimal | None = None
    fee_currency: str | None = None
    #: Trigger price of a stop-loss order (None for the others).
    stop_price: Decimal | None = None

    @property
    def remaining(self) -> Decimal:
        """Return the amount still unfilled."""
        return self.amount - self.filled

    @property
    def is_final(self) -> bool:
        """Return whether no more fills can arrive."""
        return self.status.is_final


#: What the exchange answers to a new order (an acknowledgement is the order itself).
OrderAck = ExchangeOrder


@dataclass(frozen=True)
class OrderRejected:
    """An order refused before it was sent, or refused by the exchange, with the reason.

    Parameters
    ----------
    client_order_id
        The request's client order id.
    code
        ``lot_size``, ``min_notional``, ``price_filter``, ``market_inactive``,
        ``no_reference_price`` for our checks; the error code (``insufficient_funds``,
        ``invalid_order``) when the exchange refused it.
    reason
        Words for the user.
    exchange_message
        The exchange's own words, when it answered.
    sent
        Whether the order reached the exchange.
    """

    client_order_id: str
    symbol: str
    code: str
    reason: str
    exchange_message: str | None = None
    sent: bool = False


@dataclass(frozen=True)
class Balance:
    """One asset's balance."""

    asset: str
    free: Decimal
    locked: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        """Return ``free + locked``."""
        return self.free + self.locked


@dataclass(frozen=True)
class Ticker:
    """The latest prices of a pair (None where the exchange gives none)."""

    symbol: str
    last: Decimal | None
    bid: Decimal | None = None
    ask: Decimal | None = None
    timestamp_ms: int | None = None

    def price_for(self, side: OrderSide) -> Decimal | None:
        """Return the price a market order of ``side`` would pay: ask to buy, bid to sell."""
        quote = self.ask if side is OrderSide.BUY else self.bid
        return quote if quote is not None and quote > 0 else self.last


class Candle(NamedTuple):
    """One OHLCV candle; floats, because strategies compute on float64 arrays."""

    timestamp_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class PreparedOrder:
    """An order rounded to the market's precision and checked against its filters.

    ``price`` is a limit order's price, a stop-loss order's stop price, None for a market order.
    """

    request: OrderRequest
    amount: Decimal
    price: Decimal | None
    notional: Decimal | None = field(default=None)


def prepare_order(
    market: MarketInfo, request: OrderRequest, reference_price: Decimal | None = None
) -> PreparedOrder | OrderRejected:
    """Round an order to the market's precision and check its filters before sending it.

    Parameters
    ----------
    market
        The pair's precision and limits.
    request
        The order.
    reference_price
        The price a market order is expected to fill at (the ticker's ask or bid), used for the
        minimum-notional check; limit orders use their own price.

    Returns
    -------
    PreparedOrder | OrderRejected
        The rounded order, or a rejection naming the filter it fails.
    """

    def reject(code: str, reason: str) -> OrderRejected:
        return OrderRejected(request.client_order_id, request.symbol, code, reason)

    if not market.active:
        return reject(REJECT_MARKET_INACTIVE, f"{market.symbol} is not trading")
    amount = market.round_amount(request.amount)
    if amount <= 0 or (market.min_amount is not None and amount < market.min_amount):
        return reject(
            REJECT_LOT_SIZE,
            f"amount {request.amount} rounds to {amount}, below the minimum "
            f"{market.min_amount or market.amount_step}",
        )
    if market.max_amount is not None and amount > market.max_amount:
        return reject(REJECT_LOT_SIZE, f"amount {amount} above the maximum {market.max_amount}")
    price: Decimal | None = None
    if request.type is OrderType.LIMIT:
        assert request.price is not None  # checked by OrderRequest
        price = market.round_price(request.price)
        if price <= 0:
            return reject(REJECT_PRICE_FILTER, f"price {request.price} rounds to {price}")
        if market.min_price is not None and price < market.min_price:
            return reject(
                REJECT_PRICE_FILTER, f"price {price} below the minimum {market.min_price}"
            )
        if market.max_price is not None and price > market.max_price:
            return reject(
                REJECT_PRICE_FILTER, f"price {price} above the maximum {market.max_price}"
            )
        check_price: Decimal | None = price
    elif request.type is OrderType.STOP_LOSS:
        # The trigger is a price like a limit's, held to the same filter; sent on the tick
        # already (the caller rounds it the way the stop must move), it is kept as it is.
        assert request.stop_price is not None  # checked by OrderRequest
        price = market.round_price(request.stop_price)
        if price <= 0 or (market.min_price is not None and price < market.min_price):
            return reject(REJECT_PRICE_FILTER, f"stop price {request.stop_price} out of range")
        if market.max_price is not None and price > market.max_price:
            return reject(
                REJECT_PRICE_FILTER, f"stop price {price} above the maximum {market.max_price}"
            )
        check_price = price
    else:
        check_price = reference_price
    notional = amount * check_price if check_price is not None else None
    if market.min_notional is not None and market.min_notional > 0:
        if notional is None:
            return reject(REJECT_NO_PRICE, "no price to check the minimum notional against")
        if notional < market.min_notional:
            return reject(
                REJECT_MIN_NOTIONAL,
                f"notional {notional} {market.quote} below the minimum {market.min_notional}",
            )
    return PreparedOrder(request=request, amount=amount, price=price, notional=notional)


# ------------------------------------------------------------------------------- interface


class ExecutionClient(ABC):
    """What a bot needs from an exchange: market data, balances and orders, all async.

    Implementations wrap every exchange call in the account's circuit breaker, retry reads
    that failed for retryable reasons, and never send an order twice: see
    :meth:`create_order`.
    """

    #: Key of the account in the circuit-breaker registry (``exchange:account``).
    account_key: str
    #: Where public market data comes from (``binance@<api root>``): clients with the same key
    #: see the same candles, so bots in one process may share one request.  None: never share.
    market_data_key: str | None = None

    @property
    def supports_short(self) -> bool:
        """Whether the account can sell what it does not hold (a margin account).

        Spot accounts cannot: a bot whose strategy shorts refuses to start on them.  A paper
        broker with a margin account (``PaperBroker(max_gross_leverage=...)``) can.
        """
        return False

    @property
    def books_submitted_mark(self) -> bool:
        """Whether the exchange can mark the bot's intent submitted as it books the order.

        A paper exchange keeps its books in the bot's own database, so the mark is written in
        the transaction that books the order (:meth:`create_marked_order`): the order is in the
        book exactly when its intent says so.  A real exchange cannot: the bot marks its intent
        before the request leaves, so a restart asks the exchange about it.
        """
        return False

    async def create_marked_order(
        self, request: OrderRequest, mark_submitted_as: str
    ) -> ExchangeOrder | OrderRejected:
        """Place an order and mark the bot's intent of its client order id submitted, as one step.

        Only clients whose :attr:`books_submitted_mark` is true implement it; ``mark_submitted_as``
        is the reason the intent is marked with.

        Raises
        ------
        NotImplementedError
            If the client cannot write the mark (:attr:`books_submitted_mark` is false).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot book the submitted mark")

    @abstractmethod
    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        """Return every market by unified symbol (cached after the first call)."""

    async def market(self, symbol: str) -> MarketInfo:
        """Return one market's precision and limits.

        Raises
        ------
        InvalidInputError
            If the exchange does not list ``symbol``.
        """
        markets = await self.load_markets()
        key = normalize_symbol(symbol)
        if key not in markets:
            raise InvalidInputError("symbol", f"{key} is not listed by the exchange")
        return markets[key]

    @abstractmethod
    async def fetch_balances(self) -> dict[str, Balance]:
        """Return the account's balances by asset (assets with a zero total may be left out)."""

    @abstractmethod
    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Return candles, oldest first (the last one may still be open)."""

    @abstractmethod
    async def fetch_ticker(self, symbol: str) -> Ticker:
        """Return the latest prices of ``symbol``."""

    @abstractmethod
    async def create_order(self, request: OrderRequest) -> ExchangeOrder | OrderRejected:
        """Place an order once, whatever happens to the answer.

        The amount and price are rounded to the market's precision; an order failing the lot
        size, price or minimum-notional filters is refused before it is sent.  When the answer
        is lost (timeout, 5xx, dropped connection) the order is looked up by its client order
        id; it is sent again (with the same id) only when the exchange says it does not exist.

        Returns
        -------
        ExchangeOrder | OrderRejected
            The order as the exchange holds it, or why it was refused.

        Raises
        ------
        OrderStateUnknownError
            If the answer was lost and the exchange could not be asked whether the order
            exists: the caller must reconcile by client order id later.
        RetryableExchangeError
            If the order was certainly not sent (circuit open, rate limited before sending).
        FatalExchangeError
            For credentials or permission problems.
        """

    @abstractmethod
    async def cancel_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> ExchangeOrder | None:
        """Cancel an open order; return its state afterwards, None if it does not exist.

        An order that filled before the cancel arrived is returned as it is (``FILLED``).
        """

    @abstractmethod
    async def fetch_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> ExchangeOrder | None:
        """Return an order by exchange id or client order id; None proves it does not exist."""

    @abstractmethod
    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """Return the open orders (of ``symbol``, or all)."""

    @abstractmethod
    async def fetch_my_trades(
        self,
        symbol: str,
        since_ms: int | None = None,
        limit: int | None = None,
        *,
        order_id: str | None = None,
    ) -> list[Fill]:
        """Return the account's fills in ``symbol``, oldest first (of one order if given)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> ExecutionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "CLIENT_ORDER_ID",
    "Balance",
    "Candle",
    "ExchangeOrder",
    "ExecutionClient",
    "Fill",
    "MarketInfo",
    "OrderAck",
    "OrderRejected",
    "OrderRequest",
    "PreparedOrder",
    "Ticker",
    "prepare_order",
    "to_decimal",
]
