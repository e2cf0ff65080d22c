"""The risk manager: approves or denies every order and detects breaches across all bots.

Single-threaded by design: the ``RiskActor`` serialises calls, so the checks and the reservations
they make (an approved order counts as open until the bot reports it closed) cannot race.

Every check is O(1) in the number of bots: the portfolio's totals (equity, exposure, open
orders, equity at the start of the day) are kept up to date as each bot's figures change, instead
of summed over every bot for every order (sums that grow with the bots, on every order's
critical path).  They are Decimal sums, so
they equal a fresh sum to Decimal's 28 significant digits.

Denials are values (:class:`RiskDecision`), never exceptions.  A breach of a loss or drawdown
limit halts the bot (or, for portfolio limits, every bot): later orders are denied until the
bot is re-armed by a user starting it again.  Orders that only reduce a position are always
allowed past exposure and size limits (so a halted bot can still be flattened), but never past
the kill switch unless the kill-switch procedure itself sends them.

Bots belong to users (tenants).  Besides the portfolio's limits and kill switch, which only an
operator sets, each user may have limits of their own (:class:`UserRiskLimits`, which can only
tighten the portfolio's) and a kill switch of their own: both apply to that user's bots and
never to another user's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cryptoorchestrator.platform.model.clock import Clock, LiveClock
from cryptoorchestrator.platform.risk import margin
from cryptoorchestrator.platform.risk.limits import (
    Breach,
    OrderCheck,
    RiskDecision,
    RiskLimits,
    UserRiskLimits,
)

_HUNDRED = Decimal(100)
_MINUTE = 60.0


@dataclass(slots=True)
class BotRisk:
    """What the risk manager tracks per bot."""

    bot_id: int
    max_position_pct: Decimal
    risk_per_trade_pct: Decimal
    equity: Decimal
    peak_equity: Decimal
    day_start_equity: Decimal
    day: str
    positions: dict[str, Decimal] = field(default_factory=dict)  # symbol -> signed notional
    open_orders: set[str] = field(default_factory=set)
    order_times: deque[float] = field(default_factory=deque)
    halted: str | None = None
    #: The bot's owner: their own limits and kill switch apply to it (None: portfolio only).
    user_id: int | None = None

    @property
    def exposure(self) -> Decimal:
        """Gross notional of the bot's positions."""
        return sum((abs(v) for v in self.positions.values()), Decimal(0))


@dataclass(slots=True)
class UserTotals:
    """Running totals over one user's bots (kept like the portfolio's, see the module doc)."""

    equity: Decimal = Decimal(0)
    exposure: Decimal = Decimal(0)
    open_orders: int = 0
    bots: int = 0


class RiskManager:
    """Portfolio-wide pre-trade checks and post-trade breach detection."""

    def __init__(self, limits: RiskLimits | None = None, clock: Clock | None = None) -> None:
        self.limits = limits or RiskLimits()
        self.clock = clock or LiveClock()
        self.bots: dict[int, BotRisk] = {}
        self._portfolio_peak = Decimal(0)
        self.portfolio_halted: str | None = None
        # Running totals over self.bots (see the module docstring); changed only by the
        # methods below, which change the bots' figures.
        self._equity_total = Decimal(0)
        self._exposure_total = Decimal(0)
        self._open_total = 0
        self._day_start_total = Decimal(0)
        self._day = self._today()
        # Per user: their own limits, the portfolio limits tightened by them (looked up on
        # every approval, so computed when either changes), and totals over their bots.
        self.user_limits: dict[int, UserRiskLimits] = {}
        self._effective: dict[int, RiskLimits] = {}
        self._users: dict[int, UserTotals] = {}

    # ------------------------------------------------------------------ registration, limits

    def register_bot(
        self,
        bot_id: int,
        *,
        equity: Decimal,
        max_position_pct: Decimal,
        risk_per_trade_pct: Decimal,
        peak_equity: Decimal | None = None,
        day_start_equity: Decimal | None = None,
        positions: dict[str, Decimal] | None = None,
        open_orders: set[str] | None = None,
        user_id: int | None = None,
    ) -> None:
        """Start tracking a bot (or refresh it on restart); re-arms a halted bot.

        ``user_id`` is the bot's owner, whose own limits and kill switch then apply to it.
        """
        self.unregister_bot(bot_id)
        bot = self.bots[bot_id] = BotRisk(
            user_id=user_id,
            bot_id=bot_id,
            max_position_pct=max_position_pct,
            risk_per_trade_pct=risk_per_trade_pct,
            equity=equity,
            peak_equity=max(peak_equity or equity, equity),
            day_start_equity=day_start_equity or equity,
            day=self._today(),
            positions=dict(positions or {}),
            open_orders=set(open_orders or ()),
        )
        self._equity_total += bot.equity
        self._exposure_total += bot.exposure
        self._open_total += len(bot.open_orders)
        self._day_start_total += bot.day_start_equity
        if user_id is not None:
            mine = self._users.setdefault(user_id, UserTotals())
            mine.equity += bot.equity
            mine.exposure += bot.exposure
            mine.open_orders += len(bot.open_orders)
            mine.bots += 1
        # The portfolio's peak moves with the set of bots, or adding/removing a bot would
        # read as a gain/loss of the whole portfolio.
        self._portfolio_peak = max(self._portfolio_peak + equity, self.portfolio_equity)

    def unregister_bot(self, bot_id: int) -> None:
        """Stop tracking a bot (it was deleted or stopped for good)."""
        bot = self.bots.pop(bot_id, None)
        if bot is not None:
            self._equity_total -= bot.equity
            self._exposure_total -= bot.exposure
            self._open_total -= len(bot.open_orders)
            self._day_start_total -= bot.day_start_equity
            self._portfolio_peak = max(
                self._portfolio_peak - bot.peak_equity, self.portfolio_equity
            )
            mine = self._users.get(bot.user_id) if bot.user_id is not None else None
            if mine is not None:
                mine.equity -= bot.equity
                mine.exposure -= bot.exposure
                mine.open_orders -= len(bot.open_orders)
                mine.bots -= 1
                if mine.bots == 0:
                    del self._users[bot.user_id]  # type: ignore[arg-type]

    def bots_of(self, user_id: int) -> list[int]:
        """Return the ids of the tracked bots that belong to ``user_id``."""
        return [b.bot_id for b in self.bots.values() if b.user_id == user_id]

    def set_limits(self, limits: RiskLimits) -> None:
        """Replace the limits at run time; a cleared kill switch also clears portfolio halts."""
        if self.limits.kill_switch and not limits.kill_switch:
            self.portfolio_halted = None
        self.limits = limits
        self._effective = {uid: mine.applied_to(limits) for uid, mine in self.user_limits.items()}

    def activate_kill_switch(self) -> None:
        """Deny every new order from now on."""
        self.set_limits(self.limits.model_copy(update={"kill_switch": True}))

    def set_user_limits(self, user_id: int, limits: UserRiskLimits) -> None:
        """Replace ``user_id``'s own limits (and kill switch); they apply to their bots only."""
        self.user_limits[user_id] = limits
        self._effective[user_id] = limits.applied_to(self.limits)

    def limits_for_user(self, user_id: int) -> UserRiskLimits:
        """Return ``user_id``'s own limits (all unset, kill switch off, if they have none)."""
        return self.user_limits.get(user_id) or UserRiskLimits()

    def activate_user_kill_switch(self, user_id: int) -> None:
        """Deny every new order of ``user_id``'s bots from now on (other users' are unaffected)."""
        mine = self.limits_for_user(user_id)
        self.set_user_limits(user_id, mine.model_copy(update={"kill_switch": True}))

    def release_user_kill_switch(self, user_id: int) -> None:
        """Let ``user_id``'s bots trade again (bots stopped by the switch must be started)."""
        mine = self.limits_for_user(user_id)
        self.set_user_limits(user_id, mine.model_copy(update={"kill_switch": False}))

    # ----------------------------------------------------------------------------- checks

    def approve(self, check: OrderCheck) -> RiskDecision:
        """Approve or deny one order; an approval reserves an open-order slot."""
        limits = self.limits
        if limits.kill_switch:
            return RiskDecision.deny("kill_switch", "kill switch is active: all trading stopped")
        bot = self.bots.get(check.bot_id)
        if bot is None:
            return RiskDecision.deny("unknown_bot", f"bot {check.bot_id} is not registered")
        mine = self.user_limits.get(bot.user_id) if bot.user_id is not None else None
        if mine is not None:
            if mine.kill_switch:
                return RiskDecision.deny(
                    "user_kill_switch", "your kill switch is active: your bots' trading stopped"
                )
            limits = self._effective[bot.user_id]  # type: ignore[index]
        if check.amount <= 0 or check.price <= 0:
            return RiskDecision.deny("invalid_order", "amount and price must be positive")
        if check.equity is not None and check.equity > 0:
            self._set_equity(bot, check.equity)
            bot.peak_equity = max(bot.peak_equity, check.equity)
        if check.position_notional is not None:
            self.update_position(bot.bot_id, check.symbol, check.position_notional)
        if not check.reduce_only:
            if self.portfolio_halted:
                return RiskDecision.deny("portfolio_halted", self.portfolio_halted)
            if bot.halted:
                return RiskDecision.deny("bot_halted", bot.halted)
        now = self.clock.monotonic()
        while bot.order_times and now - bot.order_times[0] >= _MINUTE:
            bot.order_times.popleft()
        if len(bot.order_times) >= limits.max_orders_per_minute:
            return RiskDecision.deny(
                "max_orders_per_minute",
                f"{len(bot.order_times)} orders in the last minute "
                f"(limit {limits.max_orders_per_minute})",
            )
        if len(bot.open_orders) >= limits.max_open_orders:
            return RiskDecision.deny(
                "max_open_orders",
                f"bot has {len(bot.open_orders)} open orders (limit {limits.max_open_orders})",
            )
        total_open = self._open_total
        if total_open >= limits.max_open_orders_total:
            return RiskDecision.deny(
                "max_open_orders_total",
                f"{total_open} open orders across bots (limit {limits.max_open_orders_total})",
            )
        totals = self._users.get(bot.user_id) if bot.user_id is not None else None
        if (
            mine is not None
            and totals is not None
            and mine.max_open_orders_total is not None
            and totals.open_orders >= mine.max_open_orders_total
        ):
            return RiskDecision.deny(
                "user_max_open_orders_total",
                f"{totals.open_orders} open orders across your bots "
                f"(your limit {mine.max_open_orders_total})",
            )
        if not check.reduce_only:
            denial = self._check_exposure(bot, check, limits, mine, totals)
            if denial is not None:
                return denial
        bot.order_times.append(now)
        if check.client_order_id not in bot.open_orders:
            bot.open_orders.add(check.client_order_id)
            self._open_total += 1
            if totals is not None:
                totals.open_orders += 1
        return RiskDecision.approve()

    def _check_exposure(
        self,
        bot: BotRisk,
        check: OrderCheck,
        limits: RiskLimits,
        mine: UserRiskLimits | None,
        totals: UserTotals | None,
    ) -> RiskDecision | None:
        signed = check.notional if check.side == "buy" else -check.notional
        current = bot.positions.get(check.symbol, Decimal(0))
        after = abs(current + signed)
        if after <= abs(current):
            return None  # the order reduces the position: size and exposure only shrink
        pos_pct = min(bot.max_position_pct, limits.max_position_pct)
        cap = bot.equity * pos_pct / _HUNDRED
        if after > cap:
            return RiskDecision.deny(
                "max_position_size",
                f"position would be {after:.2f}, above {pos_pct}% of bot equity ({cap:.2f})",
            )
        # the backtest's rule (SimConfig.max_gross_leverage): all of the bot's positions, on
        # the equity left after the order's fee when it is known (the kernel's entry_room)
        gross = bot.exposure - abs(current) + after
        lev = limits.max_gross_leverage
        equity = bot.equity
        if check.fee_rate is not None:
            equity -= check.notional * check.fee_rate
        if not margin.within_gross_cap(equity, gross, lev):
            return RiskDecision.deny(
                "max_gross_leverage",
                f"bot's gross exposure would be {gross:.2f}, above {lev}x its equity "
                f"({lev * bot.equity:.2f})",
            )
        if check.stop_price is not None:
            risk_pct = min(bot.risk_per_trade_pct, limits.max_risk_per_trade_pct)
            loss = check.amount * abs(check.price - check.stop_price)
            allowed = bot.equity * risk_pct / _HUNDRED
            # A cent of tolerance absorbs the rounding of amounts to the exchange's lot size.
            if loss > allowed + Decimal("0.01"):
                return RiskDecision.deny(
                    "risk_per_trade",
                    f"loss at the stop would be {loss:.2f}, above {risk_pct}% of equity "
                    f"({allowed:.2f})",
                )
        new_exposure = self._exposure_total - abs(current) + after
        portfolio_cap = self.portfolio_equity * limits.max_total_exposure_pct / _HUNDRED
        if new_exposure > portfolio_cap:
            return RiskDecision.deny(
                "max_total_exposure",
                f"total exposure would be {new_exposure:.2f}, above "
                f"{limits.max_total_exposure_pct}% of portfolio equity ({portfolio_cap:.2f})",
            )
        if mine is not None and totals is not None and mine.max_total_exposure_pct is not None:
            user_exposure = totals.exposure - abs(current) + after
            user_cap = totals.equity * mine.max_total_exposure_pct / _HUNDRED
            if user_exposure > user_cap:
                return RiskDecision.deny(
                    "user_max_total_exposure",
                    f"your bots' exposure would be {user_exposure:.2f}, above your limit of "
                    f"{mine.max_total_exposure_pct}% of their equity ({user_cap:.2f})",
                )
        return None

    # ------------------------------------------------------------------------ bookkeeping

    def order_closed(self, bot_id: int, client_order_id: str) -> None:
        """Release the open-order slot of an order that filled, was cancelled or rejected."""
        bot = self.bots.get(bot_id)
        if bot is not None and client_order_id in bot.open_orders:
            bot.open_orders.remove(client_order_id)
            self._open_total -= 1
            totals = self._users.get(bot.user_id) if bot.user_id is not None else None
            if totals is not None:
                totals.open_orders -= 1

    def update_position(self, bot_id: int, symbol: str, signed_notional: Decimal) -> None:
        """Record a bot's position in ``symbol`` (positive long, negative short, at mark)."""
        bot = self.bots.get(bot_id)
        if bot is None:
            return
        if signed_notional == 0:
            old = bot.positions.pop(symbol, None)
        else:
            old = bot.positions.get(symbol)
            bot.positions[symbol] = signed_notional
        change = abs(signed_notional) - (abs(old) if old is not None else 0)
        self._exposure_total += change
        totals = self._users.get(bot.user_id) if bot.user_id is not None else None
        if totals is not None:
            totals.exposure += change

    def report(
        self,
        bot_id: int,
        symbol: str,
        signed_notional: Decimal,
        equity: Decimal,
        closed_orders: list[str] | tuple[str, ...] = (),
    ) -> list[Breach]:
        """Take a bot's end-of-candle report in one call; return the breaches it causes.

        Releases the open-order slots of ``closed_orders``, records the position at mark and
        then the equity (see :meth:`update_equity`).
        """
        for client_order_id in closed_orders:
            self.order_closed(bot_id, client_order_id)
        self.update_position(bot_id, symbol, signed_notional)
        return self.update_equity(bot_id, equity)

    def update_equity(self, bot_id: int, equity: Decimal) -> list[Breach]:
        """Record a bot's equity and return the limits it (or the portfolio) now breaches.

        A breach halts the bot (or every bot, for portfolio limits) until re-armed.
        """
        bot = self.bots.get(bot_id)
        if bot is None:
            return []
        today = self._today()
        if today != self._day:
            self._roll_day(today)
        self._set_equity(bot, equity)
        bot.peak_equity = max(bot.peak_equity, equity)
        breaches: list[Breach] = []
        if bot.halted is None:
            limits = self._limits_of(bot)
            breach = self._loss_breach(
                bot.day_start_equity,
                bot.peak_equity,
                equity,
                limits.max_daily_loss_pct,
                limits.max_drawdown_pct,
                bot_id,
            )
            if breach is None:
                breach = self._margin_breach(bot, limits)
            if breach is not None:
                bot.halted = breach.message
                breaches.append(breach)
        total = self._equity_total
        self._portfolio_peak = max(self._portfolio_peak, total)
        if self.portfolio_halted is None:
            breach = self._loss_breach(
                self._day_start_total,
                self._portfolio_peak,
                total,
                self.limits.portfolio_max_daily_loss_pct,
                self.limits.portfolio_max_drawdown_pct,
                None,
            )
            if breach is not None:
                self.portfolio_halted = breach.message
                breaches.append(breach)
        return breaches

    def _limits_of(self, bot: BotRisk) -> RiskLimits:
        """Return the limits in force for ``bot``: the portfolio's, tightened by its owner's."""
        if bot.user_id is None:
            return self.limits
        return self._effective.get(bot.user_id, self.limits)

    def _set_equity(self, bot: BotRisk, equity: Decimal) -> None:
        self._equity_total += equity - bot.equity
        totals = self._users.get(bot.user_id) if bot.user_id is not None else None
        if totals is not None:
            totals.equity += equity - bot.equity
        bot.equity = equity

    def _roll_day(self, today: str) -> None:
        """A new (UTC) day: each bot's day starts at its equity now (once, for every bot)."""
        for bot in self.bots.values():
            if bot.day != today:
                self._day_start_total += bot.equity - bot.day_start_equity
                bot.day, bot.day_start_equity = today, bot.equity
        self._day = today

    @staticmethod
    def _margin_breach(bot: BotRisk, limits: RiskLimits) -> Breach | None:
        """A margin call (``platform.risk.margin.margin_call``), equity at mark for its value.

        The backtest liquidates at that point; here the bot is halted, so that only orders
        reducing its positions pass until it is re-armed.
        """
        gross = bot.exposure
        mm = limits.maintenance_margin_pct / _HUNDRED
        if gross == 0 or not margin.margin_call(bot.equity, gross, mm):
            return None
        return Breach(
            "maintenance_margin",
            f"bot {bot.bot_id}'s equity {bot.equity:.2f} is at most "
            f"{limits.maintenance_margin_pct}% of its gross exposure ({gross:.2f})",
            bot.bot_id,
            {"equity": str(bot.equity), "gross_exposure": str(gross)},
        )

    @staticmethod
    def _loss_breach(
        day_start: Decimal,
        peak: Decimal,
        equity: Decimal,
        daily_pct: Decimal,
        drawdown_pct: Decimal,
        bot_id: int | None,
    ) -> Breach | None:
        who = f"bot {bot_id}" if bot_id is not None else "portfolio"
        if day_start > 0:
            loss = (day_start - equity) / day_start * _HUNDRED
            if loss >= daily_pct:
                return Breach(
                    "max_daily_loss" if bot_id is not None else "portfolio_max_daily_loss",
                    f"{who} lost {loss:.2f}% today (limit {daily_pct}%)",
                    bot_id,
                    {"loss_pct": str(round(loss, 4)), "limit_pct": str(daily_pct)},
                )
        if peak > 0:
            drawdown = (peak - equity) / peak * _HUNDRED
            if drawdown >= drawdown_pct:
                return Breach(
                    "max_drawdown" if bot_id is not None else "portfolio_max_drawdown",
                    f"{who} is {drawdown:.2f}% below its peak (limit {drawdown_pct}%)",
                    bot_id,
                    {"drawdown_pct": str(round(drawdown, 4)), "limit_pct": str(drawdown_pct)},
                )
        return None

    # ------------------------------------------------------------------------- reporting

    @property
    def portfolio_equity(self) -> Decimal:
        """Sum of the equity of every tracked bot."""
        return self._equity_total

    def utilisation(self) -> dict[str, Any]:
        """Return how much of each limit is used, for ``GET /api/analytics/risk``."""
        exposure = sum((b.exposure for b in self.bots.values()), Decimal(0))
        equity = self.portfolio_equity
        cap = equity * self.limits.max_total_exposure_pct / _HUNDRED
        drawdown = (
            (self._portfolio_peak - equity) / self._portfolio_peak * _HUNDRED
            if self._portfolio_peak > 0
            else Decimal(0)
        )
        return {
            "portfolio_equity": str(equity),
            "total_exposure": str(exposure),
            "exposure_pct_of_limit": float(exposure / cap * _HUNDRED) if cap > 0 else 0.0,
            "portfolio_drawdown_pct": float(drawdown),
            "open_orders": sum(len(b.open_orders) for b in self.bots.values()),
            "kill_switch": self.limits.kill_switch,
            "portfolio_halted": self.portfolio_halted,
            "bots": {str(b.bot_id): self._bot_report(b) for b in self.bots.values()},
        }

    def user_utilisation(self, user_id: int) -> dict[str, Any]:
        """Return utilisation of ``user_id``'s bots only: nothing summed over other users' bots.

        What a trader may see: their bots' equity, exposure and open orders, their own limits
        and kill switch, and whether the portfolio's kill switch or halt stops them too.
        """
        mine = [b for b in self.bots.values() if b.user_id == user_id]
        own = self.limits_for_user(user_id)
        equity = sum((b.equity for b in mine), Decimal(0))
        exposure = sum((b.exposure for b in mine), Decimal(0))
        pct = own.max_total_exposure_pct
        if pct is None:
            pct = self.limits.max_total_exposure_pct
        cap = equity * pct / _HUNDRED
        return {
            "equity": str(equity),
            "total_exposure": str(exposure),
            "exposure_pct_of_limit": float(exposure / cap * _HUNDRED) if cap > 0 else 0.0,
            "open_orders": sum(len(b.open_orders) for b in mine),
            "kill_switch": self.limits.kill_switch,
            "user_kill_switch": own.kill_switch,
            # Whether, not why: the reason quotes the whole portfolio's loss.
            "portfolio_halted": self.portfolio_halted is not None,
            "bots": {str(b.bot_id): self._bot_report(b) for b in mine},
        }

    @staticmethod
    def _bot_report(b: BotRisk) -> dict[str, Any]:
        return {
            "equity": str(b.equity),
            "exposure": str(b.exposure),
            "open_orders": len(b.open_orders),
            "drawdown_pct": float((b.peak_equity - b.equity) / b.peak_equity * _HUNDRED)
            if b.peak_equity > 0
            else 0.0,
            "halted": b.halted,
        }

    def _today(self) -> str:
        return datetime.fromtimestamp(self.clock.now_ms() / 1000, tz=UTC).date().isoformat()
