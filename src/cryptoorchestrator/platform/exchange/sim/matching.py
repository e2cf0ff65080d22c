"""The matching engine of the simulated exchange: places, fills and cancels every account's orders.

Every balance, price, quantity and fee is an exact :class:`~decimal.Decimal`.  Market orders fill
at once at the replayed price moved against the trader by ``slippage_bps``; limit orders rest,
lock their funds, and fill at their limit price when the replayed price path
(:mod:`cryptoorchestrator.platform.exchange.sim.path`) reaches it as the clock advances.
Stop-loss orders (Binance spot ``STOP_LOSS``: a market order sent once the traded price reaches
``stopPrice``) rest and lock their funds too; one whose ``stopPrice`` the path reaches fills whole
at the stop price, or at the candle's open when the candle opens beyond it (a gap), the backtest
kernel's stop rule.  One that would trigger at once is refused, as Binance refuses it.  With
``partial_fill_ratio`` set, a resting limit order fills at most that fraction of its original
quantity per candle in which the price trades through it, and a market order executes at once as
several trades of that fraction (one fill per chunk, as Binance reports one fill per price level
a market order crosses).  Fees are Binance's: a rate of the received asset (a buyer pays in
base, a seller in quote).

Rejections use Binance's own error codes and messages (:class:`~.wire.BinanceReject`), which the
HTTP layer sends as ``{"code": ..., "msg": ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from cryptoorchestrator.platform.exchange.sim.accounts import SimAccount, SimFill, SimOrder
from cryptoorchestrator.platform.exchange.sim.market import ReplayMarket, SymbolSpec
from cryptoorchestrator.platform.exchange.sim.path import first_touch
from cryptoorchestrator.platform.exchange.sim.wire import (
    EIGHT_PLACES,
    BinanceReject,
    mandatory,
    parse_decimal,
)

_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")

#: Binance's messages, word for word: ccxt matches some of them exactly.
MSG_INSUFFICIENT = "Account has insufficient balance for requested action."
MSG_DUPLICATE = "Duplicate order sent."
MSG_NO_ORDER = "Order does not exist."
MSG_UNKNOWN_ORDER = "Unknown order sent."
MSG_WOULD_TAKE = "Order would immediately match and take."
MSG_WOULD_TRIGGER = "Stop price would trigger immediately."


def _floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


class MatchingEngine:
    """Places, matches and cancels orders of all accounts against the replayed markets.

    Not thread-safe by itself: the simulator calls it under its lock.

    Parameters
    ----------
    markets
        Replayed markets keyed by Binance market id (``BTCUSDT``).
    fee_rate
        Maker and taker commission rate (Binance's default 0.1 % is ``Decimal("0.001")``).
    slippage_bps
        How far market orders fill from the replayed price, against the trader, in basis points.
    partial_fill_ratio
        When set (0 < r < 1), a resting limit order fills at most ``r`` of its original quantity
        per candle; None fills it whole when the price reaches it.
    """

    def __init__(
        self,
        markets: Mapping[str, ReplayMarket],
        *,
        fee_rate: Decimal = Decimal("0.001"),
        slippage_bps: Decimal = Decimal(0),
        partial_fill_ratio: Decimal | None = None,
        start_ms: int = 0,
    ) -> None:
        self.markets = dict(markets)
        self.fee_rate = Decimal(fee_rate)
        self.slippage_bps = Decimal(slippage_bps)
        self.partial_fill_ratio = (
            Decimal(partial_fill_ratio) if partial_fill_ratio is not None else None
        )
        self.accounts: dict[str, SimAccount] = {}
        self._next_order_id = 1
        self._next_trade_id = 1
        self._processed_until = start_ms

    # ---------------------------------------------------------------- accounts

    def add_account(self, api_key: str, secret: str, balances: Mapping[str, Decimal]) -> SimAccount:
        """Create the account of ``api_key`` with ``balances`` free."""
        account = SimAccount(api_key=api_key, secret=secret)
        for asset, amount in balances.items():
            account.move(asset.upper(), free=Decimal(amount))
        self.accounts[api_key] = account
        return account

    def market(self, market_id: str | None) -> ReplayMarket:
        """Return the market of ``market_id`` or reject with -1121 like Binance."""
        if not market_id:
            raise mandatory("symbol")
        market = self.markets.get(market_id)
        if market is None:
            raise BinanceReject(-1121, "Invalid symbol.")
        return market

    # ---------------------------------------------------------------- orders

    def find_order(
        self, account: SimAccount, market_id: str, order_id: str | None, client_id: str | None
    ) -> SimOrder:
        """Return the order by ``orderId`` or ``origClientOrderId``, or reject with -2013."""
        order: SimOrder | None = None
        if order_id not in (None, ""):
            try:
                order = account.orders.get(int(str(order_id)))
            except ValueError:
                raise mandatory("orderId") from None
        elif client_id not in (None, ""):
            oid = account.by_client_id.get(str(client_id))
            order = account.orders.get(oid) if oid is not None else None
        else:
            raise BinanceReject(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        if order is None or order.market_id != market_id:
            raise BinanceReject(-2013, MSG_NO_ORDER)
        return order

    def place_order(self, account: SimAccount, params: Mapping[str, str], now: int) -> SimOrder:
        """Validate, place and (for market or marketable orders) fill an order at ``now``."""
        market = self.market(params.get("symbol"))
        spec = market.spec
        side = (params.get("side") or "").upper()
        if side not in ("BUY", "SELL"):
            raise mandatory("side")
        otype = (params.get("type") or "").upper()
        if otype not in ("LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS"):
            if not otype:
                raise mandatory("type")
            raise BinanceReject(-1116, "Invalid orderType.")
        client_id = params.get("newClientOrderId") or f"sim-{self._next_order_id}"
        if not _CLIENT_ID.match(client_id):
            raise BinanceReject(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        # Stricter than Binance (which only checks open orders): a client order id is unique
        # for the account's whole life, so a bot can always resolve a lost answer by it.
        if client_id in account.by_client_id:
            raise BinanceReject(-2010, MSG_DUPLICATE)

        current = market.price(now)
        if current is None or now >= market.end_ms:
            raise BinanceReject(-2010, "Market is closed.")
        qty = parse_decimal(params, "quantity")
        quote_qty = parse_decimal(params, "quoteOrderQty")
        price = parse_decimal(params, "price")
        tif = (params.get("timeInForce") or "GTC").upper()
        if otype == "LIMIT" and not params.get("timeInForce"):
            raise mandatory("timeInForce")
        if tif not in ("GTC", "IOC", "FOK"):
            raise BinanceReject(-1115, "Invalid timeInForce.")
        if otype == "STOP_LOSS":
            return self._place_stop(account, params, market, side, client_id, qty, now, current)

        if otype == "MARKET":
            fill_price = self._slipped(Decimal(repr(current)), spec, side)
            if qty is None and quote_qty is not None:
                if quote_qty <= 0:
                    raise BinanceReject(-1013, "Invalid quantity.")
                qty = _floor_to(quote_qty / fill_price, spec.step_size)
            if qty is None:
                raise BinanceReject(
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                )
            self._check_lot(qty, spec)
            self._check_notional(qty * fill_price, spec)
            order_price = Decimal(0)
        else:
            if price is None:
                raise mandatory("price")
            if qty is None:
                raise mandatory("quantity")
            self._check_price(price, spec)
            self._check_lot(qty, spec)
            self._check_notional(qty * price, spec)
            order_price = price
            fill_price = price
        order = SimOrder(
            order_id=self._next_order_id,  # taken by _register
            client_order_id=client_id,
            market_id=spec.market_id,
            side=side,
            type=otype,
            time_in_force=tif if otype != "MARKET" else "GTC",
            price=order_price,
            orig_qty=qty,
            time=now,
            update_time=now,
            orig_quote_qty=quote_qty or Decimal(0),
        )
        marketable = otype == "MARKET" or (
            (side == "BUY" and Decimal(repr(current)) <= order_price)
            or (side == "SELL" and Decimal(repr(current)) >= order_price)
        )
        if otype == "LIMIT_MAKER" and marketable:
            raise BinanceReject(-2010, MSG_WOULD_TAKE)
        if otype != "MARKET" and marketable:
            # A limit order that crosses the book takes liquidity at the book's price, which is
            # never worse than its limit.
            slipped = self._slipped(Decimal(repr(current)), spec, side)
            fill_price = min(slipped, order_price) if side == "BUY" else max(slipped, order_price)

        # Funds: a resting order locks what it may spend; a market order needs it free now.
        need_asset = spec.quote if side == "BUY" else spec.base
        need = qty * (order_price if otype != "MARKET" else fill_price) if side == "BUY" else qty
        free, _ = account.balance(need_asset)
        if need > free:
            raise BinanceReject(-2010, MSG_INSUFFICIENT)
        if not marketable and tif in ("IOC", "FOK"):
            order.status = "EXPIRED"
            self._register(account, order)
            return order

        self._register(account, order)
        if otype != "MARKET":
            account.move(need_asset, free=-need, locked=need)
            order.locked_left = need
        if marketable:
            candle = market.visible_count(now) - 1
            if otype == "MARKET":
                # A market order sweeps the book at once; with partial fills on it executes as
                # several trades (as Binance reports one fill per price level it crossed).
                while order.remaining > 0:
                    chunk = self._chunk(order, spec)
                    self._fill(account, order, spec, fill_price, chunk, now, candle, is_maker=False)
            else:
                chunk = self._chunk(order, spec)
                if tif in ("IOC", "FOK"):
                    chunk = order.remaining
                self._fill(account, order, spec, fill_price, chunk, now, candle, is_maker=False)
            if tif == "IOC" and order.is_open:
                self._cancel(account, order, spec, now, status="EXPIRED")
        account.update_time = now
        return order

    def _place_stop(
        self,
        account: SimAccount,
        params: Mapping[str, str],
        market: ReplayMarket,
        side: str,
        client_id: str,
        qty: Decimal | None,
        now: int,
        current: float,
    ) -> SimOrder:
        """Rest a ``STOP_LOSS`` order, locking what it will spend (base to sell, quote to buy)."""
        spec = market.spec
        stop = parse_decimal(params, "stopPrice", required=True)
        assert stop is not None  # required
        if qty is None:
            raise mandatory("quantity")
        self._check_price(stop, spec)
        self._check_lot(qty, spec)
        self._check_notional(qty * stop, spec)
        last = Decimal(repr(current))
        if (side == "SELL" and last <= stop) or (side == "BUY" and last >= stop):
            raise BinanceReject(-2010, MSG_WOULD_TRIGGER)
        need_asset = spec.quote if side == "BUY" else spec.base
        need = qty * stop if side == "BUY" else qty
        if need > account.balance(need_asset)[0]:
            raise BinanceReject(-2010, MSG_INSUFFICIENT)
        order = SimOrder(
            order_id=self._next_order_id,
            client_order_id=client_id,
            market_id=spec.market_id,
            side=side,
            type="STOP_LOSS",
            time_in_force="GTC",
            price=Decimal(0),
            orig_qty=qty,
            time=now,
            update_time=now,
            stop_price=stop,
        )
        self._register(account, order)
        account.move(need_asset, free=-need, locked=need)
        order.locked_left = need
        account.update_time = now
        return order

    def _register(self, account: SimAccount, order: SimOrder) -> None:
        self._next_order_id = max(self._next_order_id, order.order_id + 1)
        account.orders[order.order_id] = order
        account.by_client_id[order.client_order_id] = order.order_id

    def cancel_order(
        self,
        account: SimAccount,
        market_id: str,
        order_id: str | None,
        client_id: str | None,
        now: int,
    ) -> SimOrder:
        """Cancel an open order; reject with -2011 if it is unknown or already final."""
        market = self.market(market_id)
        try:
            order = self.find_order(account, market.spec.market_id, order_id, client_id)
        except BinanceReject as exc:
            if exc.code == -2013:
                raise BinanceReject(-2011, MSG_UNKNOWN_ORDER) from None
            raise
        if not order.is_open:
            raise BinanceReject(-2011, MSG_UNKNOWN_ORDER)
        self._cancel(account, order, market.spec, now, status="CANCELED")
        return order

    def _cancel(
        self, account: SimAccount, order: SimOrder, spec: SymbolSpec, now: int, *, status: str
    ) -> None:
        asset = spec.quote if order.side == "BUY" else spec.base
        account.move(asset, free=order.locked_left, locked=-order.locked_left)
        order.locked_left = Decimal(0)
        order.status = status
        order.update_time = now
        account.update_time = now

    # ---------------------------------------------------------------- filters

    @staticmethod
    def _check_price(price: Decimal, spec: SymbolSpec) -> None:
        if price <= 0:
            raise BinanceReject(-1013, "Invalid price.")
        if price < spec.min_price or price > spec.max_price or price % spec.tick_size != 0:
            raise BinanceReject(-1013, "Filter failure: PRICE_FILTER")

    @staticmethod
    def _check_lot(qty: Decimal, spec: SymbolSpec) -> None:
        if qty <= 0:
            raise BinanceReject(-1013, "Invalid quantity.")
        if qty < spec.min_qty or qty > spec.max_qty or (qty - spec.min_qty) % spec.step_size != 0:
            raise BinanceReject(-1013, "Filter failure: LOT_SIZE")

    @staticmethod
    def _check_notional(notional: Decimal, spec: SymbolSpec) -> None:
        if notional < spec.min_notional:
            raise BinanceReject(-1013, "Filter failure: NOTIONAL")

    def _slipped(self, price: Decimal, spec: SymbolSpec, side: str) -> Decimal:
        # The replayed float price first snaps to the tick, so zero slippage means "at market".
        price = (price / spec.tick_size).to_integral_value() * spec.tick_size
        if self.slippage_bps == 0:
            return price
        factor = self.slippage_bps / Decimal(10_000)
        if side == "BUY":
            raw = price * (1 + factor)
            return (raw / spec.tick_size).to_integral_value(rounding=ROUND_CEILING) * spec.tick_size
        raw = price * (1 - factor)
        return max(
            spec.tick_size,
            (raw / spec.tick_size).to_integral_value(rounding=ROUND_FLOOR) * spec.tick_size,
        )

    def _chunk(self, order: SimOrder, spec: SymbolSpec) -> Decimal:
        if self.partial_fill_ratio is None:
            return order.remaining
        part = _floor_to(order.orig_qty * self.partial_fill_ratio, spec.step_size)
        if part <= 0:
            part = spec.step_size
        return min(part, order.remaining)

    # ---------------------------------------------------------------- fills

    def _fill(
        self,
        account: SimAccount,
        order: SimOrder,
        spec: SymbolSpec,
        price: Decimal,
        qty: Decimal,
        now: int,
        candle: int,
        *,
        is_maker: bool,
    ) -> None:
        cost = price * qty
        if order.side == "BUY":
            commission = (qty * self.fee_rate).quantize(EIGHT_PLACES, rounding=ROUND_HALF_UP)
            commission_asset = spec.base
            if order.type == "MARKET":
                account.move(spec.quote, free=-cost)
            else:
                reserved = (order.price or order.stop_price) * qty
                if order.remaining == qty:
                    reserved = order.locked_left
                order.locked_left -= reserved
                account.move(spec.quote, free=reserved - cost, locked=-reserved)
            account.move(spec.base, free=qty - commission)
        else:
            commission = (cost * self.fee_rate).quantize(EIGHT_PLACES, rounding=ROUND_HALF_UP)
            commission_asset = spec.quote
            if order.type == "MARKET":
                account.move(spec.base, free=-qty)
            else:
                order.locked_left -= qty
                account.move(spec.base, locked=-qty)
            account.move(spec.quote, free=cost - commission)
        fill = SimFill(
            trade_id=self._next_trade_id,
            order_id=order.order_id,
            market_id=order.market_id,
            price=price,
            qty=qty,
            commission=commission,
            commission_asset=commission_asset,
            time=now,
            is_buyer=order.side == "BUY",
            is_maker=is_maker,
        )
        self._next_trade_id += 1
        order.fills.append(fill)
        account.trades.append(fill)
        order.executed_qty += qty
        order.cum_quote += cost
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        order.update_time = now
        order.last_fill_candle = candle
        account.update_time = now

    def process_until(self, now: int) -> None:
        """Fill resting limit orders the replayed prices reached since the last call, in order."""
        start = self._processed_until
        if now <= start:
            return
        self._processed_until = now
        resting: dict[str, list[tuple[SimAccount, SimOrder]]] = {}
        for account in self.accounts.values():
            for order in account.orders.values():
                if order.is_open and order.type != "MARKET":
                    resting.setdefault(order.market_id, []).append((account, order))
        for market_id, entries in resting.items():
            market = self.markets[market_id]
            entries.sort(key=lambda e: e[1].order_id)
            first = max(market.visible_count(start) - 1, 0)
            last = market.visible_count(now)
            tf = market.tf_ms
            for i in range(first, last):
                open_time = int(market.ts[i])
                if open_time + tf <= start:
                    continue
                o, h, lo, c = (
                    float(market.o[i]),
                    float(market.h[i]),
                    float(market.l[i]),
                    float(market.c[i]),
                )
                f_end = min(1.0, (now - open_time) / tf)
                for account, order in entries:
                    if not order.is_open or order.last_fill_candle >= i:
                        continue
                    f_start = max(0.0, (max(start, order.time) - open_time) / tf)
                    if f_start >= 1.0 or f_start > f_end:
                        continue
                    if order.type == "STOP_LOSS":
                        self._trigger_stop(account, order, market, i, f_start, f_end)
                        continue
                    touch = first_touch(
                        o, h, lo, c, f_start, f_end, float(order.price), buy=order.side == "BUY"
                    )
                    if touch is None:
                        continue
                    at = max(open_time + int(touch * tf), order.time)
                    chunk = self._chunk(order, market.spec)
                    self._fill(
                        account, order, market.spec, order.price, chunk, at, i, is_maker=True
                    )

    def _trigger_stop(
        self,
        account: SimAccount,
        order: SimOrder,
        market: ReplayMarket,
        i: int,
        f_start: float,
        f_end: float,
    ) -> None:
        """Fill a stop-loss order whose stop candle ``i``'s path reached between two fractions.

        The backtest kernel's rule: a candle that opens beyond the stop (placed before the
        candle opened) fills at its open; otherwise at the stop price.  The market order it
        becomes executes whole at once (one trade per chunk with partial fills on), as a taker.
        """
        o, h, lo, c = (float(a[i]) for a in (market.o, market.h, market.l, market.c))
        stop = order.stop_price
        # A falling price triggers a sell stop, as it fills a resting buy limit (and vice versa).
        touch = first_touch(o, h, lo, c, f_start, f_end, float(stop), buy=order.side == "SELL")
        if touch is None:
            return
        spec = market.spec
        open_time = int(market.ts[i])
        price = stop
        opened = Decimal(repr(o))
        if f_start == 0.0 and (
            (order.side == "SELL" and opened <= stop) or (order.side == "BUY" and opened >= stop)
        ):
            price = (opened / spec.tick_size).to_integral_value() * spec.tick_size
        at = max(open_time + int(touch * market.tf_ms), order.time)
        while order.remaining > 0:
            chunk = self._chunk(order, spec)
            self._fill(account, order, spec, price, chunk, at, i, is_maker=False)
