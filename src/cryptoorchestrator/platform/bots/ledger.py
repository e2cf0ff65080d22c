"""A bot's pure bookkeeping and decisions: no database, no exchange, no I/O.

* :class:`BotSettings`: what the loop needs from the bot's stored configuration;
* :class:`Ledger`: the bot's own books, exact (cash, position, cost basis, P&L, fees);
* :func:`decide`: the orders to send on a candle, as the backtest engine decides;
* :func:`entry_amount`, :func:`stop_distances`, :func:`risk_distance`: entry sizing and the
  stop distances it is sized on, as the engine's;
* :func:`client_order_id` and :func:`candle_of`: the deterministic client order ids.

:class:`~cryptoorchestrator.platform.bots.runtime.BotRuntime` wires these to the database and
the exchange; everything here is tested without either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

from cryptoorchestrator.platform.backtest.stops import resolve_stop
from cryptoorchestrator.platform.exchange.execution import Fill
from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.risk import margin

if TYPE_CHECKING:
    from cryptoorchestrator.platform.storage.models import Bot, Trade

_ZERO = Decimal(0)


class LiveSignal(NamedTuple):
    """A strategy's decision at the last bar, with the stop distances of that bar."""

    long_entry: bool
    long_exit: bool
    short_entry: bool
    short_exit: bool
    #: Stop distances at this bar (fractions; NaN: none): per-bar ``Signals`` or class defaults.
    stop_loss: float = math.nan
    take_profit: float = math.nan
    trailing_stop: float = math.nan


@dataclass(frozen=True)
class BotSettings:
    """What the runtime needs from the bot's stored configuration."""

    bot_id: int
    symbol: str
    timeframe: str
    exchange: str
    starting_balance: Decimal
    max_position_pct: Decimal
    risk_per_trade_pct: Decimal
    stop_loss_pct: Decimal | None = None
    take_profit_pct: Decimal | None = None
    trailing_stop_pct: Decimal | None = None
    fee_rate: Decimal = Decimal("0.001")
    #: Closed candles the strategy is evaluated on: its ``required_window(params)``.
    window: int = 500
    #: Most candles the exchange returns per OHLCV request (Binance: 1,000); longer windows
    #: are fetched in pages.
    ohlcv_page: int = 1000
    #: Whether the strategy shorts (its ``short`` parameter): the account must support it.
    allow_short: bool = False
    #: The margin rule's cap on gross exposure, a multiple of equity (the backtest's
    #: ``SimConfig.max_gross_leverage``); applies to accounts that can short.
    max_gross_leverage: Decimal = Decimal(1)

    @classmethod
    def from_row(cls, bot: Bot, exchange: str, window: int = 500) -> BotSettings:
        """Build from a ``bots`` row; ``window`` is the strategy's ``required_window``."""
        return cls(
            bot_id=bot.id,
            symbol=bot.trading_pair,
            timeframe=bot.timeframe,
            exchange=exchange,
            starting_balance=bot.starting_balance or Decimal(10_000),
            max_position_pct=bot.max_position_size,
            risk_per_trade_pct=bot.risk_per_trade,
            stop_loss_pct=bot.stop_loss,
            take_profit_pct=bot.take_profit,
            trailing_stop_pct=bot.trailing_stop,
            window=window,
            allow_short=bool((bot.params or {}).get("short", False)),
        )


@dataclass
class Ledger:
    """The bot's own books, exact: cash in quote, position in base, costs and P&L.

    The position's cost basis (quote paid, fees included) is kept as a total rather than an
    average price, so a full exit realises exactly ``proceeds - basis`` with no rounding.  On a
    margin account (``margin``) the position is signed: a sale beyond the holding opens a short
    (its basis is the quote received, negative), and a buy covers it first.
    """

    cash: Decimal
    amount: Decimal = _ZERO
    cost_basis: Decimal = _ZERO
    realized_pnl: Decimal = _ZERO
    fees_paid: Decimal = _ZERO
    #: The open position's entry fills (price x amount, amount) and its first fill's time:
    #: stops are measured from the fill price, as in the backtest, not from the cost basis.
    #: A sale ends the entry (a spot bot sells all it can; what stays is dust below the lot
    #: step), and the next buy starts a new one.
    entry_notional: Decimal = _ZERO
    entry_amount: Decimal = _ZERO
    entry_ms: int | None = None
    entry_open: bool = False
    #: A margin account: sales beyond the holding are shorts (spot: the position ends at 0).
    margin: bool = False

    @property
    def average_price(self) -> Decimal:
        """Cost basis per unit held (fees included; a short's: proceeds net of fees)."""
        return self.cost_basis / self.amount if self.amount != 0 else _ZERO

    @property
    def entry_price(self) -> Decimal:
        """Average fill price of the open entry (fees excluded); zero when there is none."""
        if not self.entry_open or self.entry_amount <= 0:
            return _ZERO
        return self.entry_notional / self.entry_amount

    def equity(self, mark: Decimal) -> Decimal:
        """Cash plus the position marked at ``mark``."""
        return self.cash + self.amount * mark

    def apply(self, fill: Fill, base: str, quote: str) -> Decimal:
        """Apply one fill (spot: fees in the received asset, or quote); return realised P&L."""
        if self.margin:
            return self._apply_signed(fill, base)
        fee_quote = _ZERO
        pnl = _ZERO
        if fill.side is OrderSide.BUY:
            received, paid = fill.amount, fill.cost
            if fill.fee_currency == base:
                # Paid in units never received: the basis is the quote spent.
                received -= fill.fee
                fee_quote = fill.fee * fill.price
            else:
                paid += fill.fee
                fee_quote = fill.fee
            self.cash -= paid
            self.amount += received
            self.cost_basis += paid
            if not self.entry_open:
                self.entry_notional, self.entry_amount, self.entry_ms = _ZERO, _ZERO, None
                self.entry_open = True
            self.entry_notional += fill.price * fill.amount
            self.entry_amount += fill.amount
            if self.entry_ms is None:
                self.entry_ms = fill.timestamp_ms
        else:
            self.entry_open = False
            proceeds = fill.cost
            sold = fill.amount
            if fill.fee_currency == base:
                sold += fill.fee
                fee_quote = fill.fee * fill.price
            else:
                proceeds -= fill.fee
                fee_quote = fill.fee
            self.cash += proceeds
            if sold >= self.amount:
                basis_out = self.cost_basis
            else:
                basis_out = self.cost_basis * sold / self.amount
            pnl = proceeds - basis_out
            self.cost_basis -= basis_out
            self.amount -= sold
            if self.amount <= 0:
                self.amount, self.cost_basis = _ZERO, _ZERO
        self.fees_paid += fee_quote
        self.realized_pnl += pnl
        return pnl

    def _apply_signed(self, fill: Fill, base: str) -> Decimal:
        """Apply one fill to a signed position (a margin account); return realised P&L."""
        buy = fill.side is OrderSide.BUY
        qty = fill.amount
        if fill.fee_currency == base:
            # the fee is base the account never receives (buy) or also gives (sell)
            qty = qty - fill.fee if buy else qty + fill.fee
            flow = -fill.cost if buy else fill.cost
            fee_quote = fill.fee * fill.price
        else:
            flow = -(fill.cost + fill.fee) if buy else fill.cost - fill.fee
            fee_quote = fill.fee
        self.cash += flow
        self.fees_paid += fee_quote
        delta = qty if buy else -qty
        pnl = _ZERO
        held = self.amount
        opening = abs(delta)
        if held != 0 and (held > 0) != (delta > 0):
            # reduces (or closes) the position first: the entry ends
            closing = min(abs(delta), abs(held))
            share = closing / abs(delta)
            basis_out = (
                self.cost_basis if closing >= abs(held) else self.cost_basis * closing / abs(held)
            )
            pnl = flow * share - basis_out
            self.cost_basis -= basis_out
            self.amount += closing if delta > 0 else -closing
            if self.amount == 0:
                self.cost_basis = _ZERO
            self.entry_open = False
            opening -= closing
            flow -= flow * share
        if opening > 0:
            # opens (or adds to) a position on the fill's side: its basis is what it cost
            self.cost_basis -= flow
            self.amount += opening if delta > 0 else -opening
            if not self.entry_open:
                self.entry_notional, self.entry_amount, self.entry_ms = _ZERO, _ZERO, None
                self.entry_open = True
            self.entry_notional += fill.price * opening
            self.entry_amount += opening
            if self.entry_ms is None:
                self.entry_ms = fill.timestamp_ms
        self.realized_pnl += pnl
        return pnl


def pct_fraction(pct: Decimal | None) -> float | None:
    """Return a percentage setting as the kernel's fraction (None stays None)."""
    return None if pct is None else float(pct) / 100.0


def stop_distances(
    config: BotSettings, per_bar: Sequence[float | None] = (None, None, None)
) -> tuple[float, float, float]:
    """Return the stop-loss, take-profit and trailing-stop distances an entry opens with.

    The bot's settings, else the strategy's values at the signal bar (``per_bar``: its
    per-bar ``Signals`` stops or class defaults), else NaN: the backtest's precedence.
    """
    return (
        resolve_stop(pct_fraction(config.stop_loss_pct), per_bar[0]),
        resolve_stop(pct_fraction(config.take_profit_pct), per_bar[1]),
        resolve_stop(pct_fraction(config.trailing_stop_pct), per_bar[2]),
    )


def risk_distance(
    entry_stops: tuple[float, float, float], stop_loss_pct: Decimal | None
) -> Decimal:
    """Return the distance risk sizing divides by, as the kernel's ``_risk_distance_nb``.

    The stop nearest to the entry: the trailing stop where it is set and not wider than the
    stop-loss (it starts at its full distance), of the distances the entry opens with
    (``entry_stops``, see :func:`stop_distances`); ``stop_loss_pct`` stands in for a
    stop-loss the entry has none of.
    """
    sl, _, tsl = entry_stops
    if math.isnan(sl):
        sl = pct_fraction(stop_loss_pct) or math.nan
    dist = tsl if not math.isnan(tsl) and not sl <= tsl else sl
    return Decimal(repr(dist))


def entry_amount(
    config: BotSettings,
    book: Ledger,
    price: Decimal,
    side: int = 1,
    entry_stops: tuple[float, float, float] = (math.nan, math.nan, math.nan),
) -> Decimal:
    """Size an entry (``side`` 1: long, -1: short) as the backtest engine sizes it
    (``_budget_nb``, then ``_avail_nb``).

    Without a stop: ``sizing="fraction"`` with ``size = maxPositionSize``.  With a stop:
    ``sizing="risk"``: the budget loses ``riskPerTrade`` of equity if the stop nearest to
    the entry is hit (:func:`risk_distance` of ``entry_stops``), capped at
    ``maxPositionSize`` of equity; both include the fee, as the engine's do.

    What the bot still holds counts against the cap: a sale rounded down to the lot step
    leaves dust, and an entry sized on the whole cap then exceeded it by the dust's value,
    so the risk actor denied every later entry (a third of the orders of a benchmark bot
    trading every candle).  Flat, this is the engine's sizing exactly.

    On a margin account (``book.margin``) what an entry may commit is the margin rule's
    (:func:`~cryptoorchestrator.platform.risk.margin.entry_room`, fees included, as the
    kernel's ``_avail_nb``): short proceeds never fund it, and an unlevered account never
    commits more than its cash.  A spot account commits at most its cash.
    """
    equity = book.equity(price)
    one_plus_fee = 1 + config.fee_rate
    hundred = Decimal(100)
    held = book.amount * price
    room = equity * config.max_position_pct / hundred - (held if side > 0 else -held)
    if config.stop_loss_pct is not None and config.stop_loss_pct > 0:
        risk = equity * config.risk_per_trade_pct / hundred
        budget = risk / risk_distance(entry_stops, config.stop_loss_pct) * one_plus_fee
        budget = min(budget, room * one_plus_fee)
    else:
        budget = room
    if book.margin:
        lev = config.max_gross_leverage
        avail = margin.entry_room(equity, abs(held), lev, config.fee_rate) * one_plus_fee
        if lev <= 1:
            avail = min(avail, book.cash)
        budget = min(budget, avail)
    else:
        budget = min(budget, book.cash)
    return budget / one_plus_fee / price if budget > 0 else _ZERO


def decide(
    position: Decimal, le: bool, lx: bool, se: bool, sx: bool, *, shorts: bool = False
) -> str | None:
    """Return the orders to send on a candle, as the engine decides (``nb._decide_nb``).

    ``"buy"`` (open long), ``"sell"`` (close long), ``"short"`` (open short), ``"cover"``
    (close short), ``"sell+short"`` / ``"cover+buy"`` (reverse: close, then open the other
    side), or None.  An entry and an exit of one side on one bar cancel.  Without ``shorts``
    (a spot account, or a strategy that does not short) a short entry only closes a long.

    Parameters
    ----------
    position
        The signed position (dust below the lot step counts as flat).
    le, lx, se, sx
        The strategy's long entry/exit and short entry/exit at the candle.
    shorts
        Whether the bot may open shorts.
    """
    if le and lx:
        le = lx = False
    if se and sx:
        se = sx = False
    if not shorts:
        if position > 0:
            return "sell" if (se or lx) else None
        if position < 0:
            return "cover" if (le or sx) else None  # a short the bot may no longer open
        return "buy" if (le and not se) else None
    if position > 0:
        if se:
            return "sell+short"
        return "sell" if lx else None
    if position < 0:
        if le:
            return "cover+buy"
        return "cover" if sx else None
    if le != se:
        return "buy" if le else "short"
    return None


def stored_fill(trade: Trade) -> Fill:
    """The fill a stored ``trades`` row records, as the ledger applies it."""
    return Fill(
        trade_id=trade.exchange_trade_id,
        order_id=str(trade.order_id),
        symbol=trade.symbol,
        side=OrderSide(trade.side),
        price=trade.price,
        amount=trade.amount,
        fee=trade.fee,
        fee_currency=trade.fee_currency,
        timestamp_ms=int(trade.timestamp.timestamp() * 1000),
    )


def client_order_id(bot_id: int, candle_ms: int, tag: str) -> str:
    """Return the deterministic client order id of a decision (same candle: same id)."""
    return f"co{bot_id}-{candle_ms}-{tag}"


def candle_of(client_id: str) -> int | None:
    """Return the candle time encoded in one of our client order ids."""
    parts = client_id.split("-")
    if len(parts) == 3 and parts[0].startswith("co") and parts[1].isdigit():
        return int(parts[1])
    return None


__all__ = [
    "BotSettings",
    "Ledger",
    "LiveSignal",
    "candle_of",
    "client_order_id",
    "decide",
    "entry_amount",
    "pct_fraction",
    "risk_distance",
    "stop_distances",
]
