"""The margin rule: one gross-exposure cap and one liquidation test for backtests and live bots.

Every runtime applies the same two rules to one account (a backtest's shared cash, a bot's
equity): the backtest kernel (:mod:`cryptoorchestrator.platform.backtest.nb`, which cannot call
Python and repeats the arithmetic; tests check its fills against these functions), the
:class:`~cryptoorchestrator.platform.risk.manager.RiskManager` (no order may take a bot past the
cap; a margin call halts the bot) and a live bot's runtime, which should call them before it
sizes an entry and after it marks its positions.  ``docs/backtest.md`` ("Margin and
liquidation") works an example through.

Definitions, with signed quantities (a short is negative; its sale proceeds are in ``cash``):

- equity ``E = cash + sum(qty * price)``;
- gross exposure ``G = sum(|qty * price|)``;
- liquidation value ``V = cash + sum(close_value(qty, price))``: what would be left after
  closing every position, fees and slippage paid.

Rule 1, entries: an entry may add at most :func:`entry_room` ``= max(L * E - G, 0)`` of
notional, a little less for its fee, which lowers ``E`` (``L``, the gross leverage cap, is 1
by default: no borrowing, and short proceeds do not fund further entries).  Rule 2,
liquidation: when :func:`margin_call` ``V <= m * G`` holds (``m``, the maintenance margin),
every position is closed and the account stops trading.

The functions are pure and work on ``float`` or on ``Decimal`` (not mixed).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

from cryptoorchestrator.platform.errors import InvalidInputError

#: Default cap on gross exposure as a multiple of equity (``SimConfig.max_gross_leverage``).
MAX_GROSS_LEVERAGE = 1.0
#: Default maintenance margin, a fraction of gross exposure (``SimConfig.maintenance_margin``);
#: of the order of the lowest maintenance rates of crypto perpetual venues.
MAINTENANCE_MARGIN = 0.005

Num = TypeVar("Num", float, Decimal)


def entry_room(equity: Num, gross: Num, max_gross_leverage: Num, fee: Num | None = None) -> Num:
    """Return the notional an entry may add: ``max_gross_leverage * equity - gross``, >= 0.

    With ``fee`` (a fraction of the notional, paid out of equity) the room shrinks to
    ``(L * E - G) / (1 + L * fee)``, so that the cap still holds once the fee is paid.

    Parameters
    ----------
    equity
        Cash plus the signed value of every position.
    gross
        Sum of ``|position value|`` over every position (shorts included).
    max_gross_leverage
        Cap on gross exposure as a multiple of equity.
    fee
        The entry's fee rate, or None to leave it out.
    """
    room = max_gross_leverage * equity - gross
    if fee is not None:
        room = room / (1 + max_gross_leverage * fee)
    return room if room > 0 else type(room)(0)


def within_gross_cap(equity: Num, gross_after: Num, max_gross_leverage: Num) -> bool:
    """Return whether gross exposure ``gross_after`` (after an order) is within the cap."""
    return gross_after <= max_gross_leverage * equity


def close_value(qty: float, price: float, fee: float, slippage: float) -> float:
    """Return the cash that closing ``qty`` at ``price`` brings (negative for a short).

    ``fee`` and ``slippage`` are fractions (10 bps = 0.001); slippage moves the fill against
    the trader: a long sells at ``price * (1 - slippage)``, a short buys back at
    ``price * (1 + slippage)``.
    """
    if qty > 0:
        return qty * (price * (1.0 - slippage)) * (1.0 - fee)
    return qty * (price * (1.0 + slippage)) * (1.0 + fee)


def liquidation_value(
    cash: float,
    qtys: list[float] | tuple[float, ...],
    prices: list[float] | tuple[float, ...],
    fee: float,
    slippage: float,
) -> float:
    """Return what would be left after closing every position at ``prices`` (fees paid)."""
    value = cash
    for qty, price in zip(qtys, prices, strict=True):
        if qty != 0:
            value += close_value(qty, price, fee, slippage)
    return value


def margin_call(liquidation_value: Num, gross: Num, maintenance_margin: Num) -> bool:
    """Return whether the account must be liquidated: ``liquidation_value <= m * gross``.

    With no position (``gross == 0``) it holds once nothing is left (``<= 0``): an account
    without equity stops trading.
    """
    return liquidation_value <= maintenance_margin * gross


def liquidation_price(
    cash: float, qty: float, fee: float, slippage: float, maintenance_margin: float
) -> float:
    """Return the price at which a lone position ``qty`` meets its margin call.

    Solves ``cash + close_value(qty, P) = maintenance_margin * |qty| * P``.  A short
    (``qty < 0``) is called at or above the returned price, a long at or below it; a long
    that cannot be called (paid in cash, so its value never falls below the requirement)
    returns 0.0.

    Raises
    ------
    InvalidInputError
        If ``qty`` is 0.
    """
    if qty < 0:
        return cash / (-qty * ((1.0 + slippage) * (1.0 + fee) + maintenance_margin))
    if qty == 0:
        raise InvalidInputError("qty", "a liquidation price needs a position", allowed="!= 0")
    keep = (1.0 - slippage) * (1.0 - fee) - maintenance_margin
    if keep <= 0:
        return float("inf")  # the margin exceeds what a sale brings: called at any price
    price = -cash / (qty * keep)
    return price if price > 0 else 0.0
