"""Performance of a user's bots and of their portfolio, from the stored fills and equity snapshots.

Definitions (money exact, ratios as floats; a ratio that cannot be computed is ``None``):

* **realized P&L**: the sum of ``Trade.realized_pnl`` (set on closing fills, fees included, as
  the bot's ledger books it).
* **equity**: the latest ``EquitySnapshot``; **total P&L** = equity - starting balance;
  **unrealized P&L** = total - realized (the open position marked to market, net of its entry
  fees).  Without a snapshot, equity and unrealized P&L are unknown and total = realized.
* **starting balance**: ``Bot.starting_balance``, or the 10,000 the bot runtime trades with when
  it is unset.  **total return** = total P&L / starting balance.
* **Sharpe**: simple returns ``r_i = e_i / e_(i-1) - 1`` between consecutive snapshots,
  ``mean(r) / std(r, ddof=1) * sqrt(ppy)`` with ``ppy = 365 days / median snapshot interval``
  (crypto trades 365 days; bots snapshot once per candle, so ``ppy`` is the timeframe's bars per
  year, as in backtests).  No risk-free rate.  ``None`` with fewer than two returns or zero spread.
* **max drawdown**: ``max(1 - e_t / max(e_<=t))`` over the snapshots, a positive fraction.
* **win rate**: the share of closing fills (``realized_pnl`` set) with a positive P&L.
* **fees**: in the quote currency (a fee paid in the base asset is valued at its fill's price).

The portfolio sums money over the bots; its equity curve is, at every snapshot time of any bot,
the sum of each bot's latest equity (a bot's starting balance before its first snapshot), and its
Sharpe and drawdown come from that curve.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import cast

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.storage.models import Bot, EquitySnapshot, Trade

#: What the bot runtime trades with when a bot has no ``starting_balance``.
DEFAULT_STARTING_BALANCE = Decimal(10_000)
_YEAR_S = 365 * 86_400.0
_ZERO = Decimal(0)
#: NUMERIC(38, 18) holds 38 digits; sums and fee conversions must not round at the default 28.
_PRECISION = 100


@dataclass(frozen=True)
class Performance:
    """Performance figures of one bot or of the portfolio (see the module docstring)."""

    starting_balance: Decimal
    equity: Decimal | None
    realized_pnl: Decimal
    unrealized_pnl: Decimal | None
    total_pnl: Decimal
    total_return: float | None
    sharpe: float | None
    max_drawdown: float | None
    win_rate: float | None
    trade_count: int
    closing_trade_count: int
    fees: Decimal
    snapshot_count: int
    as_of: datetime | None


@dataclass(frozen=True)
class BotPerformance:
    """One bot's identity and performance."""

    bot_id: int
    name: str
    trading_pair: str
    archived: bool
    performance: Performance


@dataclass(frozen=True)
class PerformanceReport:
    """The portfolio's performance and each bot's, by bot id."""

    portfolio: Performance
    bots: list[BotPerformance]


@dataclass
class _TradeTotals:
    realized: Decimal = _ZERO
    fees: Decimal = _ZERO
    count: int = 0
    closing: int = 0
    wins: int = 0


@dataclass
class _Curve:
    times: list[datetime] = field(default_factory=list)
    equity: list[Decimal] = field(default_factory=list)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def periods_per_year(times: Sequence[datetime]) -> float | None:
    """Return ``365 days / median interval`` of ``times``, or None without a positive interval."""
    if len(times) < 2:
        return None
    gaps = np.diff(np.array([t.timestamp() for t in times], dtype=np.float64))
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return None
    return _YEAR_S / float(np.median(gaps))


def sharpe_ratio(equity: Sequence[float], ppy: float | None) -> float | None:
    """Return the annualised Sharpe ratio of an equity curve's simple returns (no risk-free rate).

    ``None`` with fewer than two returns, zero spread, no ``ppy`` or a non-positive equity.
    """
    e = np.asarray(equity, dtype=np.float64)
    if ppy is None or e.size < 3 or np.any(e[:-1] <= 0):
        return None
    r = e[1:] / e[:-1] - 1.0
    std = float(np.std(r, ddof=1))
    if not std > 0:
        return None
    return _finite(float(np.mean(r)) / std * math.sqrt(ppy))


def max_drawdown(equity: Sequence[float]) -> float | None:
    """Return the largest fall from a running peak as a positive fraction (None when empty)."""
    e = np.asarray(equity, dtype=np.float64)
    if e.size == 0:
        return None
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - e / peak, 0.0)
    return _finite(float(np.max(dd)))


def _exact(d: Decimal) -> Decimal:
    """Strip trailing zeros (without exponent form for whole numbers), as ``Money`` reads back."""
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


def _opt(d: Decimal | None) -> Decimal | None:
    return None if d is None else _exact(d)


def _ratio(num: Decimal, den: Decimal) -> float | None:
    return _finite(float(num / den)) if den != 0 else None


def _base(symbol: str) -> str:
    return symbol.split("/", 1)[0]


def _fee_in_quote(symbol: str, fee_currency: str | None, fee: Decimal, price: Decimal) -> Decimal:
    return fee * price if fee_currency is not None and fee_currency == _base(symbol) else fee


class PerformanceQueries:
    """Performance of one user's bots (archived ones included: their history is real).

    Parameters
    ----------
    session
        The request's database session.
    user_id
        The acting user; another user's bot is "not found".
    """

    def __init__(self, session: Session, user_id: int) -> None:
        self.session = session
        self.user_id = user_id

    def report(self, bot_id: int | None = None) -> PerformanceReport:
        """Return the performance of every bot of the user, or only of ``bot_id``, and their sum.

        Raises
        ------
        NotFoundError
            If ``bot_id`` is not one of the user's bots.
        """
        with localcontext(prec=_PRECISION):
            return self._report(bot_id)

    def _report(self, bot_id: int | None) -> PerformanceReport:
        query = select(Bot).where(Bot.user_id == self.user_id).order_by(Bot.id)
        if bot_id is not None:
            query = query.where(Bot.id == bot_id)
        bots = list(self.session.scalars(query))
        if bot_id is not None and not bots:
            raise NotFoundError(f"bot {bot_id} not found")
        ids = [b.id for b in bots]
        totals = self._trade_totals(ids) if ids else {}
        curves = self._curves(ids) if ids else {}
        starts = {b.id: b.starting_balance or DEFAULT_STARTING_BALANCE for b in bots}
        per_bot = [
            BotPerformance(
                bot_id=b.id,
                name=b.name,
                trading_pair=b.trading_pair,
                archived=b.archived_at is not None,
                performance=_performance(
                    starts[b.id], totals.get(b.id, _TradeTotals()), curves.get(b.id, _Curve())
                ),
            )
            for b in bots
        ]
        return PerformanceReport(_portfolio(per_bot, totals, curves, starts), per_bot)

    def _trade_totals(self, ids: list[int]) -> dict[int, _TradeTotals]:
        if self.session.get_bind().dialect.name == "postgresql":
            return self._trade_totals_sql(ids)
        return self._trade_totals_rows(ids)

    def _trade_totals_sql(self, ids: list[int]) -> dict[int, _TradeTotals]:
        """Aggregate in the database (NUMERIC sums are exact on PostgreSQL)."""
        query = (
            select(
                Trade.bot_id,
                Trade.symbol,
                Trade.fee_currency,
                func.count(),
                func.count(Trade.realized_pnl),
                func.count(case((Trade.realized_pnl > 0, 1))),
                func.sum(Trade.realized_pnl),
                func.sum(Trade.fee),
                func.sum(Trade.fee * Trade.price),
            )
            .where(Trade.bot_id.in_(ids))
            .group_by(Trade.bot_id, Trade.symbol, Trade.fee_currency)
        )
        out: dict[int, _TradeTotals] = defaultdict(_TradeTotals)
        for bot, symbol, fee_ccy, n, closing, wins, pnl, fee, fee_value in self.session.execute(
            query
        ):
            t = out[cast(int, bot)]  # bot_id IN (...) excludes NULL
            t.count += n
            t.closing += closing
            t.wins += wins
            t.realized += Decimal(pnl) if pnl is not None else _ZERO
            in_base = fee_ccy is not None and fee_ccy == _base(symbol)
            t.fees += Decimal((fee_value if in_base else fee) or 0)
        return out

    def _trade_totals_rows(self, ids: list[int]) -> dict[int, _TradeTotals]:
        """Sum in Python: SQLite stores money as text, and its SUM would round through floats."""
        columns = (Trade.bot_id, Trade.symbol, Trade.fee_currency, Trade.fee, Trade.price)
        query = select(*columns, Trade.realized_pnl).where(Trade.bot_id.in_(ids))
        out: dict[int, _TradeTotals] = defaultdict(_TradeTotals)
        for bot, symbol, fee_ccy, fee, price, pnl in self.session.execute(query):
            t = out[cast(int, bot)]  # bot_id IN (...) excludes NULL
            t.count += 1
            t.fees += _fee_in_quote(symbol, fee_ccy, fee, price)
            if pnl is not None:
                t.closing += 1
                t.realized += pnl
                t.wins += pnl > 0
        return out

    def _curves(self, ids: list[int]) -> dict[int, _Curve]:
        query = (
            select(EquitySnapshot.bot_id, EquitySnapshot.timestamp, EquitySnapshot.equity)
            .where(EquitySnapshot.bot_id.in_(ids))
            .order_by(EquitySnapshot.bot_id, EquitySnapshot.timestamp, EquitySnapshot.id)
        )
        out: dict[int, _Curve] = defaultdict(_Curve)
        for bot, at, equity in self.session.execute(query):
            curve = out[bot]
            curve.times.append(at)
            curve.equity.append(equity)
        return out


def _performance(start: Decimal, totals: _TradeTotals, curve: _Curve) -> Performance:
    equity = curve.equity[-1] if curve.equity else None
    unrealized = None if equity is None else equity - start - totals.realized
    total = totals.realized + (unrealized or _ZERO)
    floats = [float(e) for e in curve.equity]
    return Performance(
        starting_balance=_exact(start),
        equity=_opt(equity),
        realized_pnl=_exact(totals.realized),
        unrealized_pnl=_opt(unrealized),
        total_pnl=_exact(total),
        total_return=_ratio(total, start),
        sharpe=sharpe_ratio(floats, periods_per_year(curve.times)),
        max_drawdown=max_drawdown(floats),
        win_rate=totals.wins / totals.closing if totals.closing else None,
        trade_count=totals.count,
        closing_trade_count=totals.closing,
        fees=_exact(totals.fees),
        snapshot_count=len(curve.times),
        as_of=curve.times[-1] if curve.times else None,
    )


def portfolio_curve(
    curves: Iterable[tuple[Decimal, Sequence[datetime], Sequence[Decimal]]],
) -> tuple[list[datetime], list[Decimal]]:
    """Return the summed equity curve of several ``(start, times, equity)`` curves.

    At every time any curve has a point, each curve contributes its latest equity at or before
    that time, or its starting balance before its first point.
    """
    events: list[tuple[datetime, int, Decimal]] = []
    current: list[Decimal] = []
    for i, (start, times, equity) in enumerate(curves):
        current.append(start)
        events.extend((t, i, e) for t, e in zip(times, equity, strict=True))
    events.sort(key=lambda ev: ev[0])
    out_t: list[datetime] = []
    out_e: list[Decimal] = []
    total = sum(current, _ZERO)
    for k, (at, i, e) in enumerate(events):
        total += e - current[i]
        current[i] = e
        # Several bots may snapshot at the same time: emit once, after the last of them.
        if k + 1 == len(events) or events[k + 1][0] != at:
            out_t.append(at)
            out_e.append(total)
    return out_t, out_e


def _portfolio(
    per_bot: list[BotPerformance],
    totals: dict[int, _TradeTotals],
    curves: dict[int, _Curve],
    starts: dict[int, Decimal],
) -> Performance:
    sum_totals = _TradeTotals()
    for t in totals.values():
        sum_totals.realized += t.realized
        sum_totals.fees += t.fees
        sum_totals.count += t.count
        sum_totals.closing += t.closing
        sum_totals.wins += t.wins
    with_curve = [b.bot_id for b in per_bot if b.bot_id in curves]
    times, curve = portfolio_curve(
        (starts[i], curves[i].times, curves[i].equity) for i in with_curve
    )
    start = sum((starts[b.bot_id] for b in per_bot), _ZERO)
    unrealized: Decimal | None = None
    for b in per_bot:
        u = b.performance.unrealized_pnl
        if u is not None:
            unrealized = (unrealized or _ZERO) + u
    total = sum_totals.realized + (unrealized or _ZERO)
    # Bots with snapshots count at their latest equity, the others at their start plus what
    # they realised; unknown while no bot has a snapshot.
    equity = start + total if with_curve else None
    curve_floats = [float(e) for e in curve]
    return Performance(
        starting_balance=_exact(start),
        equity=_opt(equity),
        realized_pnl=_exact(sum_totals.realized),
        unrealized_pnl=_opt(unrealized),
        total_pnl=_exact(total),
        total_return=_ratio(total, start),
        sharpe=sharpe_ratio(curve_floats, periods_per_year(times)),
        max_drawdown=max_drawdown(curve_floats),
        win_rate=sum_totals.wins / sum_totals.closing if sum_totals.closing else None,
        trade_count=sum_totals.count,
        closing_trade_count=sum_totals.closing,
        fees=_exact(sum_totals.fees),
        snapshot_count=len(times),
        as_of=times[-1] if times else None,
    )
