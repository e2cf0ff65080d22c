"""Paper trading: the :class:`ExecutionClient` interface over virtual balances in the database.

Prices come from any market-data source with the read half of the interface (a public
:class:`~cryptoorchestrator.platform.exchange.ccxt_client.CcxtExecutionClient` on a real
exchange or on the simulator).  Everything the paper "exchange" knows lives in the database, so
a bot that restarts finds its paper orders, fills and balances exactly as a live bot finds them
on the exchange:

* balances: :class:`~cryptoorchestrator.platform.storage.models.PaperBalance` rows
  (``free`` / ``locked`` per asset, exact decimals);
* orders and fills: :class:`~cryptoorchestrator.platform.storage.models.Order` and
  :class:`~cryptoorchestrator.platform.storage.models.Trade` rows with ``exchange =
  "paper:<account id>"`` and ``bot_id`` NULL.  They are the *exchange's* records, apart from the
  bot's own order rows: their ``client_order_id`` column holds ``paper:<account id>:<client order
  id>`` so both can exist (that column is unique).  Lists of a user's orders should leave out
  ``exchange LIKE 'paper:%'`` rows, as they leave out an exchange's own books.

Accepting an order, filling it and moving balances happen in one transaction: after a crash an
order either does not exist (send it again with the same client order id) or exists with its
fills.  A second order with a client order id already used returns the existing order instead
of a duplicate.

Matching: market orders fill at once at the ask (buy) or bid (sell) moved ``slippage_bps``
against the trader; a limit order that crosses fills at once at the better of its price and the
quote; otherwise it rests, locking its funds, and fills whole at its price when a later look at
the ticker shows the quote through it (every read of orders or balances looks, and so does
:meth:`PaperBroker.process`).  Fees follow Binance: ``fee_rate`` of the received asset.

Stop-loss orders (``OrderType.STOP_LOSS``, Binance spot's ``STOP_LOSS``) rest and lock their funds
like limit orders; one whose stop price the quote is already through is refused
(``would_trigger``), as Binance refuses it.  A resting stop fills whole, as a taker, by the
backtest kernel's stop rule: at the open of a candle that opened (after the order was placed)
beyond the stop, else at the stop price once the price reached it.  With ``quote_candle`` the
broker looks at that timeframe's candles since the order was placed (a candle that began before
it counts by its current quote only, its earlier prices predate the order), and stamps the fill
with the open of the candle it triggered in (where its bar is).  Without ``quote_candle`` the
broker sees quotes only, not the path between them: a quote through the stop triggers it, and
it fills at that quote (the market order a triggered stop becomes), stamped now.

Backtest parity (replays, ``co.replay``): ``fees_in_quote`` charges the fee in the quote asset on
both sides (``cost x fee_rate``, as the backtest engine charges it), and ``quote_candle`` makes
the last price of the candle forming now the only quote (bid = ask = last, no spread): at the
instant a candle opens that is its open, so a market order decided on the candle that just
closed fills at the next candle's open, as the backtest fills it.

Margin accounts (``max_gross_leverage``, for strategies that short): positions are signed, a
sale beyond what the account holds is a short (the base balance goes negative, the proceeds are
quote), and a buy may borrow quote (the quote balance goes negative) when the cap is above 1.
Every market order that adds exposure is checked against the margin rule of the backtest
(:func:`cryptoorchestrator.platform.risk.margin.within_gross_cap`): the market's gross exposure
after the fill must stay within ``max_gross_leverage`` x the account's equity after its fee
(quote plus base at the fill price), else it is refused as ``insufficient_margin``.  Orders that
reduce the position need no funds.  Liquidation is the risk manager's (a margin call halts the
bot); the paper broker does not close positions by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from functools import partial
from typing import Protocol

from sqlalchemy import Connection, String, Table, bindparam, cast, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cryptoorchestrator.platform.batching import Coalescer
from cryptoorchestrator.platform.errors import IllegalOrderTransitionError, InvalidInputError
from cryptoorchestrator.platform.exchange.execution import (
    REJECT_WOULD_TRIGGER,
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
)
from cryptoorchestrator.platform.model import OrderSide, OrderStatus, OrderType, normalize_symbol
from cryptoorchestrator.platform.model import orders as lifecycle
from cryptoorchestrator.platform.model.timeframe import timeframe_to_ms
from cryptoorchestrator.platform.risk import margin
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.marks import mark_submitted
from cryptoorchestrator.platform.storage.models import Order, PaperBalance, Trade

_FEE_PLACES = Decimal("0.00000001")
#: Prefix of the rows remembering one-time deposits (never a real asset's name).
_MARKER = "~"
_OPEN = (OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value)
# New orders are booked through Core statements: the ORM's unit of work cost more CPU than the
# booking itself, and many bots booking at once on two cores waited on it.
_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_TRADES: Table = Trade.__table__  # type: ignore[assignment]
_BALANCES: Table = PaperBalance.__table__  # type: ignore[assignment]

# Booking an order runs six statements; built once here, each execution skips SQLAlchemy's
# construction and cache-key work (most of a booking's CPU when fifty bots trade on two cores).
_ORDER_BY_KEY = select(_ORDERS.c.id).where(_ORDERS.c.client_order_id == bindparam("key"))
_LOCK_BALANCES = (
    select(_BALANCES.c.asset, _BALANCES.c.free, _BALANCES.c.locked)
    .where(_BALANCES.c.account_id == bindparam("account"))
    .with_for_update()
)
_INSERT_ORDERS = insert(_ORDERS).returning(_ORDERS.c.id, sort_by_parameter_order=True)
_INSERT_TRADE = insert(_TRADES)
# The paper exchange's order id is the row id, known once the row is inserted.
_SET_EXCHANGE_IDS = (
    update(_ORDERS)
    .where(_ORDERS.c.id.in_(bindparam("ids", expanding=True)))
    .values(exchange_order_id=cast(_ORDERS.c.id, String))
)
_ORDERS_BY_KEYS = select(_ORDERS.c.client_order_id).where(
    _ORDERS.c.client_order_id.in_(bindparam("keys", expanding=True))
)
_LOCK_ACCOUNTS = (
    select(_BALANCES.c.account_id, _BALANCES.c.asset, _BALANCES.c.free, _BALANCES.c.locked)
    .where(_BALANCES.c.account_id.in_(bindparam("accounts", expanding=True)))
    .order_by(_BALANCES.c.account_id, _BALANCES.c.asset)
    .with_for_update()
)
_UPDATE_BALANCE = (
    update(_BALANCES)
    .where(_BALANCES.c.account_id == bindparam("account"))
    .where(_BALANCES.c.asset == bindparam("asset_key"))
    .values(free=bindparam("free"), locked=bindparam("locked"))
)
_INSERT_BALANCE = insert(_BALANCES)


class MarketDataSource(Protocol):
    """The read half of :class:`ExecutionClient` that paper trading needs."""

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        """Return every market by unified symbol."""
        ...

    async def fetch_ticker(self, symbol: str) -> Ticker:
        """Return the latest prices of ``symbol``."""
        ...

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Return candles, oldest first."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _quote_time(ticker: Ticker, now: datetime) -> datetime:
    """The market's time of ``ticker`` (its exchange timestamp), ``now`` when it has none."""
    if ticker.timestamp_ms is None:
        return now
    return datetime.fromtimestamp(ticker.timestamp_ms / 1000, UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ms(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1000)


class PaperBroker(ExecutionClient):
    """Simulated execution on live prices with balances, orders and fills in the database.

    Parameters
    ----------
    settings
        Where the database is.
    account_id
        The :class:`~cryptoorchestrator.platform.storage.models.ExchangeAccount` (mode
        ``paper``) whose virtual balances these are.
    market_data
        Where prices and markets come from.
    fee_rate
        Commission rate of every fill (Binance's default 0.1 %).
    slippage_bps
        How far market orders fill from the quote, against the trader.
    clock
        Aware UTC time of fills (tests may fix it).
    quote_ttl_s
        An order may fill at the quote this broker fetched for its caller up to this many
        seconds earlier instead of asking again (0: always ask).  A bot reads the ticker to size
        its order and sends it milliseconds later; asking twice cost a request per order.
    fees_in_quote
        Charge every fee in the quote asset (``price x amount x fee_rate``), as the backtest
        engine does, instead of in the received asset as Binance does; a buy then needs its cost
        plus the fee.
    quote_candle
        A timeframe (``"1h"``): quote the last price of the market's candle of that timeframe
        forming now (its close so far; bid = ask = last) instead of its ticker.  On a replay
        whose clock stands at a candle's open, a market order then fills at exactly that open,
        the backtest's price.
    max_gross_leverage
        None (default): a spot account, which sells only what it holds.  A number: a margin
        account with this cap on gross exposure as a multiple of equity (the backtest's
        ``SimConfig.max_gross_leverage``, see the module docstring); it can short.
    bookings
        Where this broker's new orders are booked: the bot process's :class:`PaperBookings`,
        shared by its brokers so the orders their bots send together are booked in one
        transaction.  None: bookings of this broker's own (a batch per call).
    """

    def __init__(
        self,
        settings: Settings,
        account_id: int,
        market_data: MarketDataSource,
        *,
        fee_rate: Decimal | str = Decimal("0.001"),
        slippage_bps: Decimal | str | int = 0,
        clock: Callable[[], datetime] = _utcnow,
        quote_ttl_s: float = 0.0,
        fees_in_quote: bool = False,
        quote_candle: str | None = None,
        max_gross_leverage: Decimal | str | int | None = None,
        bookings: PaperBookings | None = None,
    ) -> None:
        self.settings = settings
        self.bookings = bookings if bookings is not None else PaperBookings(settings)
        self.account_id = int(account_id)
        self.market_data = market_data
        self.fee_rate = Decimal(fee_rate)
        self.slippage_bps = Decimal(slippage_bps)
        self._clock = clock
        self.quote_ttl_s = float(quote_ttl_s)
        self.fees_in_quote = bool(fees_in_quote)
        self.quote_candle = quote_candle
        self.max_gross_leverage = (
            None if max_gross_leverage is None else Decimal(max_gross_leverage)
        )
        if self.max_gross_leverage is not None and not self.max_gross_leverage > 0:
            raise InvalidInputError(
                "max_gross_leverage", "must be positive", allowed="> 0, or None for spot"
            )
        self._quotes: dict[str, tuple[float, Ticker]] = {}
        self.exchange_name = f"paper:{self.account_id}"
        self.account_key = self.exchange_name
        self.market_data_key = getattr(market_data, "market_data_key", None)
        # One transaction at a time per broker; other processes are kept out by row locks.
        self._lock = asyncio.Lock()

    def _key(self, client_order_id: str) -> str:
        return f"{self.exchange_name}:{client_order_id}"

    @property
    def supports_short(self) -> bool:
        """Whether this is a margin account (``max_gross_leverage`` set): it can short."""
        return self.max_gross_leverage is not None

    @property
    def books_submitted_mark(self) -> bool:
        """True: the paper exchange's books are in the bot's database (see
        :meth:`create_marked_order`)."""
        return True

    async def create_marked_order(
        self, request: OrderRequest, mark_submitted_as: str
    ) -> ExchangeOrder | OrderRejected:
        """Book an order and mark the bot's intent submitted in the same transaction."""
        return await self.create_order(request, mark_submitted_as=mark_submitted_as)

    def _run_db(self, fn: Callable[[Session], object]) -> object:
        """Run ``fn`` in a transaction of its own (on the calling thread)."""
        # Two brokers of one account (bots sharing it) can both create a missing balance
        # row at once; row locks cannot cover rows that do not exist yet.  The loser's
        # transaction rolled back whole, so running it again sees the winner's row.
        for attempt in range(3):
            try:
                with session_scope(self.settings) as session:
                    return fn(session)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _db(self, fn: Callable[[Session], object]) -> object:
        async with self._lock:
            return await asyncio.to_thread(self._run_db, fn)

    # ------------------------------------------------------------------ balances

    async def fund(
        self,
        balances: Mapping[str, Decimal | str | int],
        *,
        reset: bool = False,
        deposit_key: str | None = None,
    ) -> None:
        """Give the account its starting balances (once: later calls keep what exists).

        Parameters
        ----------
        balances
            Asset -> free amount.
        reset
            Overwrite existing balances (and release nothing: use on an account without open
            orders).
        deposit_key
            Add ``balances`` to what the account holds, once per key (e.g. one deposit per bot
            sharing the account); a marker row remembers the deposit across restarts.
        """
        wanted = {a.upper(): Decimal(v) for a, v in balances.items()}
        for asset, amount in wanted.items():
            if not amount.is_finite() or amount < 0:
                raise InvalidInputError(f"balances.{asset}", "must be a non-negative number")
        marker = f"{_MARKER}{deposit_key}"[:20] if deposit_key else None

        def run(session: Session) -> None:
            rows = self._balance_rows(session, lock=True)
            if marker is not None:
                if marker in rows:
                    return
                for asset, amount in wanted.items():
                    self._row(session, rows, self.account_id, asset).free += amount
                self._row(session, rows, self.account_id, marker)
                return
            if rows and not reset:
                return
            for asset, amount in wanted.items():
                row = rows.get(asset)
                if row is None:
                    session.add(
                        PaperBalance(
                            account_id=self.account_id, asset=asset, free=amount, locked=Decimal(0)
                        )
                    )
                else:
                    row.free, row.locked = amount, Decimal(0)

        await self._db(run)

    def _balance_rows(self, session: Session, *, lock: bool) -> dict[str, PaperBalance]:
        query = select(PaperBalance).where(PaperBalance.account_id == self.account_id)
        if lock:
            # Another process trading the same paper account waits here (PostgreSQL).
            query = query.with_for_update()
        return {row.asset: row for row in session.scalars(query)}

    @staticmethod
    def _row(
        session: Session, rows: dict[str, PaperBalance], account_id: int, asset: str
    ) -> PaperBalance:
        row = rows.get(asset)
        if row is None:
            row = PaperBalance(
                account_id=account_id, asset=asset, free=Decimal(0), locked=Decimal(0)
            )
            session.add(row)
            rows[asset] = row
        return row

    async def fetch_balances(self) -> dict[str, Balance]:
        """Return the virtual balances (after filling resting orders the price reached)."""
        await self.process()

        def run(session: Session) -> dict[str, Balance]:
            rows = self._balance_rows(session, lock=False)
            return {
                a: Balance(a, r.free, r.locked)
                for a, r in sorted(rows.items())
                if (r.free or r.locked) and not a.startswith(_MARKER)
            }

        return await self._db(run)  # type: ignore[return-value]

    # ------------------------------------------------------------------ market data

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        """Return the market-data source's markets."""
        return await self.market_data.load_markets(reload)

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Return the market-data source's candles."""
        return await self.market_data.fetch_ohlcv(symbol, timeframe, since_ms, limit)

    async def fetch_ticker(self, symbol: str) -> Ticker:
        """Return the market-data source's ticker (``quote_candle``: the forming candle's)."""
        sym = normalize_symbol(symbol)
        if self.quote_candle is not None:
            ticker = await self._forming_candle_quote(sym, self.quote_candle)
        else:
            ticker = await self.market_data.fetch_ticker(sym)
        if self.quote_ttl_s > 0:
            self._quotes[sym] = (time.monotonic(), ticker)
        return ticker

    async def _forming_candle_quote(self, symbol: str, timeframe: str) -> Ticker:
        """The last price of the candle forming now as bid, ask and last (``quote_candle``)."""
        candles = await self.market_data.fetch_ohlcv(symbol, timeframe, None, 1)
        if not candles:
            return Ticker(symbol, None)
        forming = candles[-1]
        # repr: the shortest decimal of the float, the exchange's own string for its prices.
        price = Decimal(repr(forming.close))
        return Ticker(symbol, price, bid=price, ask=price, timestamp_ms=forming.timestamp_ms)

    async def _quote_for_order(self, symbol: str) -> Ticker:
        """The quote an order fills at: the one just given to the caller, or a fresh one."""
        seen = self._quotes.pop(normalize_symbol(symbol), None)
        if seen is not None and time.monotonic() - seen[0] <= self.quote_ttl_s:
            return seen[1]
        return await self.fetch_ticker(symbol)

    # ------------------------------------------------------------------ orders

    def _slipped(self, price: Decimal, side: OrderSide, market: MarketInfo) -> Decimal:
        if not self.slippage_bps:
            return price
        factor = self.slippage_bps / Decimal(10_000)
        buy = side is OrderSide.BUY
        moved = price * (1 + factor) if buy else price * (1 - factor)
        tick = market.price_tick
        if not tick:
            return moved
        # Against the trader, as slippage is: a buyer pays the next tick up, a seller gets less.
        units = (moved / tick).to_integral_value(rounding=ROUND_CEILING if buy else ROUND_FLOOR)
        return max(tick, units * tick)

    async def create_order(
        self, request: OrderRequest, *, mark_submitted_as: str | None = None
    ) -> ExchangeOrder | OrderRejected:
        """Fill or book an order against the current quote, in one transaction.

        ``mark_submitted_as``: also mark the bot's intent of the same client order id
        submitted, with this reason, in that transaction (see :func:`~cryptoorchestrator.
        platform.storage.marks.mark_submitted`).  The trading loop's separate mark, written
        before a real exchange is asked, is then one step with the booking: the order is in
        the book exactly when its intent says so.  A missing intent fails the booking
        (``LookupError``), which then never happened.
        """
        market = await self.market(request.symbol)
        ticker = await self._quote_for_order(request.symbol)
        quote = ticker.price_for(request.side)
        prepared = prepare_order(market, request, quote)
        if isinstance(prepared, OrderRejected):
            return prepared
        if quote is None:
            return OrderRejected(
                request.client_order_id, request.symbol, "no_reference_price", "no quote to fill at"
            )
        fill_price: Decimal | None
        if request.type is OrderType.MARKET:
            fill_price = self._slipped(quote, request.side, market)
        elif request.type is OrderType.STOP_LOSS:
            assert prepared.price is not None
            sell = request.side is OrderSide.SELL
            if quote <= prepared.price if sell else quote >= prepared.price:
                return OrderRejected(
                    request.client_order_id,
                    request.symbol,
                    REJECT_WOULD_TRIGGER,
                    f"stop price {prepared.price} would trigger immediately at {quote}",
                    sent=True,
                )
            fill_price = None  # rests until the price reaches its stop
        else:
            assert prepared.price is not None
            crosses = (
                quote <= prepared.price
                if request.side is OrderSide.BUY
                else quote >= prepared.price
            )
            fill_price = (
                (
                    min(quote, prepared.price)
                    if request.side is OrderSide.BUY
                    else max(quote, prepared.price)
                )
                if crosses
                else None
            )
        now = self._clock()
        # A fill's time is the market's: the quote it filled at (the simulator's or replay's
        # clock, not this machine's), as the backtest stamps a fill with its bar.
        fill_time = _quote_time(ticker, now)
        mark = None if mark_submitted_as is None else (request.client_order_id, mark_submitted_as)

        def run(session: Session) -> ExchangeOrder | OrderRejected:
            conn = session.connection()
            existing = conn.execute(
                _ORDER_BY_KEY, {"key": self._key(request.client_order_id)}
            ).scalar()
            if existing is not None:
                order = session.get(Order, existing)
                assert order is not None
                return self._to_order(session, order)
            return self._book(conn, prepared, market, fill_price, now, fill_time)

        booking = _Booking(self, run, prepared, market, fill_price, now, mark, fill_time)
        return await self.bookings(booking)  # type: ignore[return-value]

    def _book(
        self,
        conn: Connection,
        prepared: PreparedOrder,
        market: MarketInfo,
        fill_price: Decimal | None,
        now: datetime,
        fill_time: datetime | None = None,
    ) -> ExchangeOrder | OrderRejected:
        """Accept a new order: fill it at ``fill_price`` (at ``fill_time``) or rest it."""
        # Another process trading the same paper account waits here (PostgreSQL).
        held = {
            r.asset: [r.free, r.locked]
            for r in conn.execute(_LOCK_BALANCES, {"account": self.account_id})
        }
        existing = {(self.account_id, asset) for asset in held}
        plan = self._plan(prepared, market, fill_price, now, held, fill_time)
        if isinstance(plan, OrderRejected):
            return plan
        return _write_plans(conn, [plan], existing)[0]

    def _plan(
        self,
        prepared: PreparedOrder,
        market: MarketInfo,
        fill_price: Decimal | None,
        now: datetime,
        held: dict[str, list[Decimal]],
        fill_time: datetime | None = None,
    ) -> _Plan | OrderRejected:
        """Decide an order against the account's ``held`` balances (``[free, locked]`` per
        asset, moved in place): the rows to write, or a rejection."""
        request = prepared.request
        amount = prepared.amount
        buy = request.side is OrderSide.BUY
        need_asset = market.quote if buy else market.base
        if buy:
            need = amount * (prepared.price if prepared.price is not None else fill_price or 0)
        else:
            need = amount
        # A fee in quote comes on top of a buy's cost (a resting buy locks its cost only and
        # pays the fee from free funds when it fills).
        wanted = need + self._quote_fee(need) if buy and self.fees_in_quote else need
        have = held[need_asset][0] if need_asset in held else Decimal(0)
        if self.max_gross_leverage is not None and fill_price is not None:
            # A margin account: the margin rule instead of the free balance.
            denial = self._margin_denial(request, amount, fill_price, market, held)
            if denial is not None:
                return denial
        elif wanted > have:
            return OrderRejected(
                request.client_order_id,
                request.symbol,
                "insufficient_funds",
                f"needs {wanted} {need_asset}, {have} free",
                sent=True,
            )
        changed: dict[str, list[Decimal]] = {}

        def balance(asset: str) -> list[Decimal]:
            row = held.setdefault(asset, [Decimal(0), Decimal(0)])
            changed[asset] = row
            return row

        order: dict[str, object] = {
            "bot_id": None,
            "client_order_id": self._key(request.client_order_id),
            "exchange": self.exchange_name,
            "symbol": request.symbol,
            "side": request.side.value,
            "type": request.type.value,
            "price": prepared.price,
            "amount": amount,
            "filled": Decimal(0),
            "average_price": None,
            "status": OrderStatus.OPEN.value,
            "submitted_at": now,
            "closed_at": None,
        }
        trade: dict[str, object] | None = None
        if fill_price is None:
            # Resting: lock what it may spend.
            row = balance(need_asset)
            row[0] -= need
            row[1] += need
        else:
            fee = self._settle(
                request.side, amount, fill_price, balance(market.base), balance(market.quote)
            )
            order.update(
                filled=amount,
                average_price=fill_price,
                status=OrderStatus.FILLED.value,
                closed_at=fill_time or now,
            )
            trade = {
                "bot_id": None,
                "symbol": request.symbol,
                "side": request.side.value,
                "price": fill_price,
                "amount": amount,
                "fee": fee,
                "fee_currency": self._fee_currency(request.side, market),
                "timestamp": fill_time or now,
            }
        # The balances as they stand after this order (later orders of a batch move them on).
        balances = {asset: (row[0], row[1]) for asset, row in changed.items()}
        return _Plan(self, prepared, order, trade, balances)

    def _margin_denial(
        self,
        request: OrderRequest,
        amount: Decimal,
        price: Decimal,
        market: MarketInfo,
        held: dict[str, list[Decimal]],
    ) -> OrderRejected | None:
        """Refuse a fill that takes the market's gross exposure past the margin cap.

        Equity is quote plus base at ``price`` (free and locked), less this fill's fee; an
        order that does not grow the position's size is always allowed.
        """
        assert self.max_gross_leverage is not None
        quote = sum(held.get(market.quote, ()), Decimal(0))
        base = sum(held.get(market.base, ()), Decimal(0))
        after = base + amount if request.side is OrderSide.BUY else base - amount
        if abs(after) <= abs(base):
            return None
        equity = quote + base * price - self._quote_fee(amount * price)
        gross = abs(after) * price
        if margin.within_gross_cap(equity, gross, self.max_gross_leverage):
            return None
        return OrderRejected(
            request.client_order_id,
            request.symbol,
            "insufficient_margin",
            f"gross exposure would be {gross} {market.quote}, above "
            f"{self.max_gross_leverage}x equity ({equity})",
            sent=True,
        )

    def _settle(
        self,
        side: OrderSide,
        qty: Decimal,
        price: Decimal,
        base: list[Decimal],
        quote: list[Decimal],
    ) -> Decimal:
        """Move ``[free, locked]`` balances for an immediate fill; return the fee.

        The same arithmetic as :meth:`_fill` with ``locked=False`` (Binance: the fee is a share
        of the received asset; with ``fees_in_quote``, of the quote asset on both sides).
        """
        cost = price * qty
        if side is OrderSide.BUY:
            if self.fees_in_quote:
                fee = self._quote_fee(cost)
                quote[0] -= cost + fee
                base[0] += qty
                return fee
            fee = (qty * self.fee_rate).quantize(_FEE_PLACES, rounding=ROUND_HALF_UP)
            quote[0] -= cost
            base[0] += qty - fee
            return fee
        fee = self._quote_fee(cost)
        base[0] -= qty
        quote[0] += cost - fee
        return fee

    def _quote_fee(self, cost: Decimal) -> Decimal:
        """The fee in quote of a fill costing ``cost`` (rounded to 1e-8, half up)."""
        return (cost * self.fee_rate).quantize(_FEE_PLACES, rounding=ROUND_HALF_UP)

    def _fee_currency(self, side: OrderSide, market: MarketInfo) -> str:
        """The asset a fill's fee is charged in (see ``fees_in_quote``)."""
        return market.base if side is OrderSide.BUY and not self.fees_in_quote else market.quote

    def _fill(
        self,
        session: Session,
        rows: dict[str, PaperBalance],
        order: Order,
        market: MarketInfo,
        price: Decimal,
        now: datetime,
        *,
        locked: bool,
    ) -> None:
        """Fill the whole order at ``price``; ``locked``: its funds were locked when it rested."""
        lifecycle.apply(order.status, lifecycle.OrderFilled)  # before anything moves
        qty = order.amount - order.filled
        cost = price * qty
        base = self._row(session, rows, self.account_id, market.base)
        quote = self._row(session, rows, self.account_id, market.quote)
        if order.side == OrderSide.BUY.value:
            if self.fees_in_quote:
                # Charged on top of the cost from what is free (a resting order locked its cost).
                fee = self._quote_fee(cost)
                fee_currency = market.quote
                quote.free -= fee
                received = qty
            else:
                fee = (qty * self.fee_rate).quantize(_FEE_PLACES, rounding=ROUND_HALF_UP)
                fee_currency = market.base
                received = qty - fee
            if locked:
                reserved = qty * (order.price or price)
                quote.locked -= reserved
                quote.free += reserved - cost
            else:
                quote.free -= cost
            base.free += received
        else:
            fee = self._quote_fee(cost)
            fee_currency = market.quote
            if locked:
                base.locked -= qty
            else:
                base.free -= qty
            quote.free += cost - fee
        count = len(list(session.scalars(select(Trade.id).where(Trade.order_id == order.id))))
        session.add(
            Trade(
                bot_id=None,
                order_id=order.id,
                exchange_trade_id=f"{order.id}-{count + 1}",
                symbol=order.symbol,
                side=order.side,
                price=price,
                amount=qty,
                fee=fee,
                fee_currency=fee_currency,
                timestamp=now,
            )
        )
        _write_status(
            session,
            order,
            lifecycle.OrderFilled(order.client_order_id),
            filled=order.amount,
            average_price=price,
            closed_at=now,
        )

    async def process(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """Fill resting orders whose price the current quote reached; return the filled ones."""

        def open_symbols(session: Session) -> dict[str, int | None]:
            query = select(Order.symbol, Order.type, Order.submitted_at).where(
                Order.exchange == self.exchange_name, Order.status.in_(_OPEN)
            )
            if symbol is not None:
                query = query.where(Order.symbol == normalize_symbol(symbol))
            # Per symbol: when its earliest resting stop was placed (None: it has none).
            out: dict[str, int | None] = {}
            for sym, otype, submitted in session.execute(query):
                placed = _ms(submitted) if otype == OrderType.STOP_LOSS.value else None
                known = out.get(sym)
                out[sym] = placed if known is None else min(known, placed or known)
            return dict(sorted(out.items()))

        symbols: dict[str, int | None] = await self._db(open_symbols)  # type: ignore[assignment]
        filled: list[ExchangeOrder] = []
        for sym, first_stop_ms in symbols.items():
            market = await self.market(sym)
            ticker = await self.fetch_ticker(sym)
            now = self._clock()
            candles = await self._candles_since(sym, first_stop_ms, now)

            def run(
                session: Session,
                sym: str = sym,
                market: MarketInfo = market,
                ticker: Ticker = ticker,
                now: datetime = now,
                candles: list[Candle] | None = candles,
            ) -> list[ExchangeOrder]:
                rows = self._balance_rows(session, lock=True)
                out = []
                query = (
                    select(Order)
                    .where(
                        Order.exchange == self.exchange_name,
                        Order.symbol == sym,
                        Order.status.in_(_OPEN),
                    )
                    .order_by(Order.id)
                    .with_for_update()
                )
                for order in session.scalars(query):
                    assert order.price is not None
                    if order.type == OrderType.STOP_LOSS.value:
                        hit = self._stop_trigger(order, market, candles, ticker, now)
                        if hit is not None:
                            price, at = hit
                            self._fill(session, rows, order, market, price, at, locked=True)
                            session.flush()
                            out.append(self._to_order(session, order))
                        continue
                    if order.side == OrderSide.BUY.value:
                        reached = ticker.ask is not None and ticker.ask <= order.price
                    else:
                        reached = ticker.bid is not None and ticker.bid >= order.price
                    if not reached and ticker.last is not None:
                        reached = (
                            ticker.last <= order.price
                            if order.side == OrderSide.BUY.value
                            else ticker.last >= order.price
                        )
                    if reached:
                        # A resting order is a maker: it fills at its own price.
                        at = _quote_time(ticker, now)
                        self._fill(session, rows, order, market, order.price, at, locked=True)
                        session.flush()
                        out.append(self._to_order(session, order))
                return out

            filled.extend(await self._db(run))  # type: ignore[arg-type]
        return filled

    async def _candles_since(
        self, symbol: str, since_ms: int | None, now: datetime
    ) -> list[Candle] | None:
        """The ``quote_candle`` candles from the one holding ``since_ms`` to now (None: none)."""
        if since_ms is None or self.quote_candle is None:
            return None
        tf = timeframe_to_ms(self.quote_candle)
        start = since_ms - since_ms % tf
        count = max((_ms(now) or start) - start, 0) // tf + 1
        return await self.market_data.fetch_ohlcv(
            symbol, self.quote_candle, start, int(min(count, 1000))
        )

    def _stop_trigger(
        self,
        order: Order,
        market: MarketInfo,
        candles: list[Candle] | None,
        ticker: Ticker,
        now: datetime,
    ) -> tuple[Decimal, datetime] | None:
        """Return ``(price, time)`` of a resting stop's fill, or None while it holds.

        The backtest kernel's rule (see the module docstring): the open of a candle opening
        beyond the stop, else the stop price once a candle reached it; on quotes alone, the
        quote that reached it.
        """
        stop = order.price
        assert stop is not None
        sell = order.side == OrderSide.SELL.value
        side = OrderSide(order.side)

        def beyond(price: Decimal) -> bool:
            return price <= stop if sell else price >= stop

        placed = _ms(order.submitted_at) or 0
        for candle in candles or ():
            # A candle that began before the order holds prices the order never saw.
            if candle.timestamp_ms < placed:
                continue
            at = datetime.fromtimestamp(candle.timestamp_ms / 1000, UTC)
            opened = Decimal(repr(candle.open))
            if beyond(opened):
                return opened, at
            if beyond(Decimal(repr(candle.low if sell else candle.high))):
                return stop, at
        quote = ticker.bid if sell else ticker.ask
        if quote is None or quote <= 0:
            quote = ticker.last
        if quote is None or not beyond(quote):
            return None
        # On candles the forming one's prices so far were checked above: at the stop.  On
        # quotes alone the market order the stop becomes fills at the quote.
        return (
            stop if candles is not None else self._slipped(quote, side, market),
            _quote_time(ticker, now),
        )

    def _find(
        self,
        session: Session,
        order_id: str | None,
        client_order_id: str | None,
        *,
        lock: bool = False,
    ) -> Order | None:
        query = select(Order).where(Order.exchange == self.exchange_name)
        if order_id:
            query = query.where(Order.exchange_order_id == str(order_id))
        elif client_order_id:
            query = query.where(Order.client_order_id == self._key(client_order_id))
        else:
            raise InvalidInputError("order_id", "give an exchange order id or a client order id")
        if lock:
            query = query.with_for_update()
        return session.scalar(query)

    async def fetch_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> ExchangeOrder | None:
        """Return a paper order by id or client order id; None when it does not exist."""
        await self.process(symbol)
        sym = normalize_symbol(symbol)

        def run(session: Session) -> ExchangeOrder | None:
            order = self._find(session, order_id, client_order_id)
            if order is None or order.symbol != sym:
                return None
            return self._to_order(session, order)

        return await self._db(run)  # type: ignore[return-value]

    async def cancel_order(
        self,
        symbol: str,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> ExchangeOrder | None:
        """Cancel a resting order and release its funds; return its state, None if unknown."""
        await self.process(symbol)
        sym = normalize_symbol(symbol)
        market = await self.market(sym)
        now = self._clock()

        def run(session: Session) -> ExchangeOrder | None:
            rows = self._balance_rows(session, lock=True)
            order = self._find(session, order_id, client_order_id, lock=True)
            if order is None or order.symbol != sym:
                return None
            if order.status in _OPEN:
                remaining = order.amount - order.filled
                if order.side == OrderSide.BUY.value:
                    row = self._row(session, rows, self.account_id, market.quote)
                    release = remaining * (order.price or Decimal(0))
                else:
                    row = self._row(session, rows, self.account_id, market.base)
                    release = remaining
                row.locked -= release
                row.free += release
                _write_status(
                    session, order, lifecycle.OrderCanceled(order.client_order_id), closed_at=now
                )
                session.flush()
            return self._to_order(session, order)

        return await self._db(run)  # type: ignore[return-value]

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """Return resting paper orders (of ``symbol``, or all)."""
        await self.process(symbol)

        def run(session: Session) -> list[ExchangeOrder]:
            query = select(Order).where(
                Order.exchange == self.exchange_name, Order.status.in_(_OPEN)
            )
            if symbol is not None:
                query = query.where(Order.symbol == normalize_symbol(symbol))
            return [self._to_order(session, o) for o in session.scalars(query.order_by(Order.id))]

        return await self._db(run)  # type: ignore[return-value]

    async def fetch_my_trades(
        self,
        symbol: str,
        since_ms: int | None = None,
        limit: int | None = None,
        *,
        order_id: str | None = None,
    ) -> list[Fill]:
        """Return paper fills in ``symbol``, oldest first."""
        await self.process(symbol)
        sym = normalize_symbol(symbol)

        def run(session: Session) -> list[Fill]:
            query = (
                select(Trade, Order.exchange_order_id)
                .join(Order, Trade.order_id == Order.id)
                .where(Order.exchange == self.exchange_name, Trade.symbol == sym)
            )
            if order_id is not None:
                query = query.where(Order.exchange_order_id == str(order_id))
            fills = [_fill_value(t, oid or "") for t, oid in session.execute(query)]
            fills.sort(key=lambda f: (f.timestamp_ms, f.trade_id))
            if since_ms is not None:
                fills = [f for f in fills if f.timestamp_ms >= since_ms]
            return fills[:limit] if limit else fills

        return await self._db(run)  # type: ignore[return-value]

    def _to_order(self, session: Session, order: Order) -> ExchangeOrder:
        trades = list(
            session.scalars(select(Trade).where(Trade.order_id == order.id).order_by(Trade.id))
        )
        fills = tuple(_fill_value(t, order.exchange_order_id or "") for t in trades)
        fee = sum((f.fee for f in fills), Decimal(0)) if fills else None
        prefix = f"{self.exchange_name}:"
        cost = sum((f.cost for f in fills), Decimal(0))
        # A stop-loss order keeps its stop price in the price column.
        stop = order.type == OrderType.STOP_LOSS.value
        return ExchangeOrder(
            order_id=order.exchange_order_id or str(order.id),
            client_order_id=order.client_order_id.removeprefix(prefix),
            symbol=order.symbol,
            side=OrderSide(order.side),
            type=OrderType(order.type),
            status=OrderStatus(order.status),
            amount=order.amount,
            filled=order.filled,
            price=None if stop else order.price,
            average_price=order.average_price,
            cost=cost,
            timestamp_ms=_ms(order.submitted_at),
            fills=fills,
            fee=fee,
            fee_currency=fills[0].fee_currency if fills else None,
            stop_price=order.price if stop else None,
        )

    async def close(self) -> None:
        """Close the market-data source."""
        await self.market_data.close()


def _write_status(
    session: Session, order: Order, event: lifecycle.OrderEvent, **values: object
) -> None:
    """Record ``event`` (and ``values``) on a paper order, guarded by the order state machine.

    The order was read (locked, on PostgreSQL) in a status the event applies in; the write
    checks it again in SQL, so an order another process moved meanwhile (SQLite has no row
    locks) fails the whole transaction (fill, balances) instead of being overwritten.
    """
    status = lifecycle.apply(order.status, event).value
    result = session.execute(
        update(_ORDERS)
        .where(_ORDERS.c.id == order.id, _ORDERS.c.status.in_(lifecycle.applies_in(event)))
        .values(status=status, **values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = session.scalar(select(_ORDERS.c.status).where(_ORDERS.c.id == order.id))
        raise IllegalOrderTransitionError(
            str(current), type(event).__name__, lifecycle.applies_in(event)
        )
    for name, value in {"status": status, **values}.items():
        set_committed_value(order, name, value)


@dataclass(frozen=True, slots=True)
class _Booking:
    """An order on its way into the book: the broker's own transaction step (``run``, used
    alone, after the mark), the intent to mark, and what a batch needs to book it with others."""

    broker: PaperBroker
    run: Callable[[Session], object]
    prepared: PreparedOrder
    market: MarketInfo
    fill_price: Decimal | None
    now: datetime
    #: The bot intent to mark submitted in the booking's transaction: (client order id, reason).
    mark: tuple[str, str] | None = None
    #: The market's time of the quote a marketable order fills at (None: ``now``).
    fill_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """An accepted order's rows: the order (final status), its fill if any, and its account's
    balances as they stand after it."""

    broker: PaperBroker
    prepared: PreparedOrder
    order: dict[str, object]
    trade: dict[str, object] | None
    balances: dict[str, tuple[Decimal, Decimal]]


class PaperBookings(Coalescer[_Booking, object]):
    """Order bookings into one database, batched across the paper brokers that share it.

    The paper brokers of the bots of one process (its ``BotProcess`` holds one of these) book
    the orders their bots send together in one transaction, on one worker thread, with one
    statement per kind of row (:func:`_book_many`): booking them one after another cost seven
    round trips each, and the last order of a group reached the book long after the first.
    Should the shared transaction fail (a balance row created by another process at the same
    moment), each order is booked again alone, so only its own caller sees its own error.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__(self._book_batch)

    async def _book_batch(self, items: list[_Booking]) -> list[object]:
        return await asyncio.to_thread(_book_all, self.settings, items)


def _book_all(settings: Settings, items: list[_Booking]) -> list[object]:
    if len(items) > 1:
        try:
            with session_scope(settings) as session:
                return _book_many(session, items)
        except Exception:  # noqa: S110 (booked again one by one below, errors to their callers)
            pass
    out: list[object] = []
    for item in items:
        try:
            out.append(item.broker._run_db(partial(_book_one, item)))  # noqa: SLF001
        except Exception as exc:
            out.append(exc)
    return out


def _book_one(item: _Booking, session: Session) -> object:
    """Book one order in ``session``'s transaction: its intent's mark, then its broker's step."""
    if item.mark is not None:
        _mark_or_fail(session.connection(), [item.mark], item.now)
    return item.run(session)


def _book_many(session: Session, items: list[_Booking]) -> list[object]:
    """Book orders of several brokers (any accounts) in ``session``'s transaction.

    The same decisions, in the same order, as booking each alone: the accounts' balance rows
    are locked together (in a fixed order, so two processes cannot deadlock), every order is
    decided against the balances the ones before it left, and the rows are written with one
    statement per kind.  An order whose client order id is already booked (by an earlier call,
    or earlier in this batch) goes through its broker's own step after the others and gets the
    existing order back.
    """
    conn = session.connection()
    marks = [item.mark for item in items if item.mark is not None]
    if marks:
        _mark_or_fail(conn, marks, max(item.now for item in items))
    keys = [
        item.broker._key(item.prepared.request.client_order_id)  # noqa: SLF001
        for item in items
    ]
    taken = set(conn.execute(_ORDERS_BY_KEYS, {"keys": keys}).scalars())
    accounts = sorted({item.broker.account_id for item in items})
    held: dict[int, dict[str, list[Decimal]]] = {account: {} for account in accounts}
    existing: set[tuple[int, str]] = set()
    for row in conn.execute(_LOCK_ACCOUNTS, {"accounts": accounts}):
        held[row.account_id][row.asset] = [row.free, row.locked]
        existing.add((row.account_id, row.asset))
    out: list[object] = [None] * len(items)
    plans: list[_Plan] = []
    placed: list[int] = []
    later: list[int] = []
    for i, item in enumerate(items):
        if keys[i] in taken:
            later.append(i)
            continue
        taken.add(keys[i])
        plan = item.broker._plan(  # noqa: SLF001 (the broker's own decision)
            item.prepared,
            item.market,
            item.fill_price,
            item.now,
            held[item.broker.account_id],
            item.fill_time,
        )
        if isinstance(plan, OrderRejected):
            out[i] = plan
        else:
            plans.append(plan)
            placed.append(i)
    if plans:
        for i, order in zip(placed, _write_plans(conn, plans, existing), strict=True):
            out[i] = order
    for i in later:
        out[i] = items[i].run(session)  # marked above with the others
    return out


def _mark_or_fail(conn: Connection, marks: list[tuple[str, str]], now: datetime) -> None:
    """Mark intents submitted; an intent that is not stored fails the transaction."""
    missing = mark_submitted(conn, marks, now)
    if missing:
        raise LookupError(f"order {sorted(missing)[0]} is not stored")


def _write_plans(
    conn: Connection, plans: Sequence[_Plan], existing: set[tuple[int, str]]
) -> list[ExchangeOrder]:
    """Write accepted orders, their fills and the balances they leave; return the orders.

    ``existing``: the (account, asset) balance rows found (and locked) before deciding; the
    others are inserted.  A row another process inserted meanwhile fails the insert, and the
    caller books again.
    """
    ids = [row.id for row in conn.execute(_INSERT_ORDERS, [p.order for p in plans])]
    conn.execute(_SET_EXCHANGE_IDS, {"ids": ids})
    trades = [
        {**p.trade, "order_id": order_id, "exchange_trade_id": f"{order_id}-1"}
        for p, order_id in zip(plans, ids, strict=True)
        if p.trade is not None
    ]
    if trades:
        conn.execute(_INSERT_TRADE, trades)
    final: dict[tuple[int, str], tuple[Decimal, Decimal]] = {}
    for p in plans:
        for asset, value in p.balances.items():
            final[p.broker.account_id, asset] = value
    updates = [
        {"account": account, "asset_key": asset, "free": free, "locked": locked}
        for (account, asset), (free, locked) in final.items()
        if (account, asset) in existing
    ]
    inserts = [
        {"account_id": account, "asset": asset, "free": free, "locked": locked}
        for (account, asset), (free, locked) in final.items()
        if (account, asset) not in existing
    ]
    if updates:
        conn.execute(_UPDATE_BALANCE, updates)
    if inserts:
        conn.execute(_INSERT_BALANCE, inserts)
    return [_placed_order(p, str(order_id)) for p, order_id in zip(plans, ids, strict=True)]


def _placed_order(plan: _Plan, exchange_id: str) -> ExchangeOrder:
    request = plan.prepared.request
    trade = plan.trade
    fills: tuple[Fill, ...] = ()
    if trade is not None:
        fills = (
            Fill(
                trade_id=f"{exchange_id}-1",
                order_id=exchange_id,
                symbol=request.symbol,
                side=request.side,
                price=trade["price"],  # type: ignore[arg-type]
                amount=trade["amount"],  # type: ignore[arg-type]
                fee=trade["fee"],  # type: ignore[arg-type]
                fee_currency=trade["fee_currency"],  # type: ignore[arg-type]
                timestamp_ms=_ms(trade["timestamp"]) or 0,  # type: ignore[arg-type]
                is_maker=None,
            ),
        )
    amount = plan.prepared.amount
    stop = request.type is OrderType.STOP_LOSS
    return ExchangeOrder(
        order_id=exchange_id,
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        status=OrderStatus.FILLED if fills else OrderStatus.OPEN,
        amount=amount,
        filled=amount if fills else Decimal(0),
        price=None if stop else plan.prepared.price,
        average_price=fills[0].price if fills else None,
        cost=sum((f.cost for f in fills), Decimal(0)),
        timestamp_ms=_ms(plan.order["submitted_at"]),  # type: ignore[arg-type]
        fills=fills,
        fee=fills[0].fee if fills else None,
        fee_currency=fills[0].fee_currency if fills else None,
        stop_price=plan.prepared.price if stop else None,
    )


def _fill_value(trade: Trade, order_id: str) -> Fill:
    return Fill(
        trade_id=trade.exchange_trade_id,
        order_id=order_id,
        symbol=trade.symbol,
        side=OrderSide(trade.side),
        price=trade.price,
        amount=trade.amount,
        fee=trade.fee,
        fee_currency=trade.fee_currency,
        timestamp_ms=_ms(trade.timestamp) or 0,
        is_maker=None,
    )
