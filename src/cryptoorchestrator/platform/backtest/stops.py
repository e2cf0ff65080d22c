"""The stop rule of the backtest kernel, shared with live bots: one rule, one implementation.

:func:`stop_exit_nb` is the kernel's own per-bar check (``nb._stop_nb``, which the event loop
inlines), compiled once more as a function callable from Python, so a live bot evaluates the
very code the backtest runs.  :class:`PositionStops` carries the state the kernel keeps per
position, and updates it as the kernel does:

- levels are measured from the entry's fill price (not the fee-inclusive average cost);
- the stop-loss and the trailing stop are one stop: the tighter (higher for a long) of
  ``entry * (1 - sl)`` and ``extreme * (1 - tsl)``;
- the trailing extreme starts at the fill price and takes a bar's high only after that bar
  was checked (a bar never trails itself);
- a bar that opens through a level exits at the open, except the bar the position was opened
  in (it opened at that open); otherwise at the level; the stop wins when the stop and the
  take-profit are both inside one bar;
- the distances (``sl``, ``tp``, ``tsl``: fractions, NaN for none) are those of the signal
  bar, fixed for the position's life: the run's settings, else the strategy's per-bar
  ``Signals`` arrays, else its class defaults (:func:`resolve_stop`);
- with the exchange's price tick, the levels are on it (``nb._stop_tick_nb``): the stop on the
  tick at or beyond its level (below for a long), the take-profit on the first tick that
  reaches its level (above for a long).  :func:`round_to_tick_nb` is the kernel's exact rounding
  (the float of the decimal ``k x tick``), and :func:`tick_decimal` the exchange's decimal of
  such a level, so the order a live bot places and the kernel's fill are the same price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from numba import njit

from cryptoorchestrator.platform.backtest.nb import (
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    REASON_TRAILING_STOP,
    _round_price_nb,
    _stop_tick_nb,
)

__all__ = [
    "REASON_STOP_LOSS",
    "REASON_TAKE_PROFIT",
    "REASON_TRAILING_STOP",
    "PositionStops",
    "resolve_stop",
    "round_to_tick_nb",
    "stop_exit_nb",
    "tick_decimal",
]


@njit(cache=True, nogil=True)
def stop_exit_nb(
    p: float,
    o: float,
    h: float,
    lo: float,
    ep: float,
    extreme: float,
    sl: float,
    tp: float,
    tsl: float,
    gap_possible: bool,
    tick: float,
) -> tuple[int, float, float]:
    """Check the stops of position ``p`` on one bar, exactly as the backtest kernel does.

    Parameters
    ----------
    p
        Position size (> 0 long, < 0 short).
    o, h, lo
        The bar's open, high and low (a forming bar's so far).
    ep
        The entry's fill price.
    extreme
        Best price since entry before this bar (high for a long, low for a short).
    sl, tp, tsl
        Stop-loss, take-profit and trailing-stop distances as fractions; NaN: none.
    gap_possible
        False on the bar the position was opened in (at its open), True afterwards.
    tick
        The exchange's price tick (0: none): levels are placed on it as the kernel places them.

    Returns
    -------
    tuple[int, float, float]
        ``(reason, exit_base, extreme)``: ``reason`` is -1 when nothing triggers, else
        ``REASON_STOP_LOSS``, ``REASON_TAKE_PROFIT`` or ``REASON_TRAILING_STOP``; ``exit_base``
        the price the kernel exits at (before slippage); ``extreme`` updated with this bar.
    """
    return _stop_tick_nb(p, o, h, lo, ep, extreme, sl, tp, tsl, gap_possible, tick)


@njit(cache=True, nogil=True)
def round_to_tick_nb(price: float, tick: float, up: bool) -> float:
    """Return the kernel's tick level at or above (``up``) or at or below ``price``.

    Parameters
    ----------
    price
        A price (float64).
    tick
        The price tick; 0 leaves ``price`` unchanged.
    up
        Round up (True) or down (False).

    Returns
    -------
    float
        The float of the decimal ``k x tick`` (one correctly rounded division), the very value
        the backtest kernel fills at (``nb._round_price_nb``).
    """
    return _round_price_nb(price, tick, up)


def tick_decimal(level: float, tick: Decimal) -> Decimal:
    """Return the exchange's decimal of ``level``, a float on the tick ``tick``.

    ``level`` comes from :func:`round_to_tick_nb` (or a stop level of this module), so it is
    the float nearest ``k x tick``: its shortest repr is that decimal, quantized to the tick.

    Raises
    ------
    ValueError
        If ``level`` is not on the tick (it did not come from the kernel's rounding).
    """
    value = Decimal(repr(float(level)))
    if tick <= 0:
        return value
    units = value / tick
    if units != units.to_integral_value():
        raise ValueError(f"{level!r} is not on the tick {tick}")
    return (units.to_integral_value() * tick).quantize(tick)


def resolve_stop(setting: float | None, signal_value: float | None) -> float:
    """Return the stop distance a position opens with: the setting, else the signal's, else NaN.

    ``signal_value`` is the strategy's per-bar value at the signal bar, or its class default
    when it has no per-bar array (the backtest's precedence, ``runner.run_backtest``).
    """
    if setting is not None:
        return float(setting)
    if signal_value is None:
        return math.nan
    return float(signal_value)


@dataclass
class PositionStops:
    """The kernel's per-position stop state for one open position (see the module docstring).

    Attributes
    ----------
    entry_price
        Fill price of the entry.
    entry_bar_ms
        Open time of the bar the entry filled in.
    sl, tp, tsl
        Distances fixed at entry (fractions; NaN: none).
    extreme
        Best price since entry, up to the last bar that was closed on.
    tick
        The exchange's price tick the levels are placed on (0: none), as the kernel's.
    side
        1.0 for a long, -1.0 for a short: the default ``side`` of the methods.
    """

    entry_price: float
    entry_bar_ms: int
    sl: float = math.nan
    tp: float = math.nan
    tsl: float = math.nan
    extreme: float = math.nan
    tick: float = 0.0
    side: float = 1.0

    def __post_init__(self) -> None:
        if math.isnan(self.extreme):
            self.extreme = self.entry_price

    @property
    def armed(self) -> bool:
        """Whether any stop is set."""
        return not (math.isnan(self.sl) and math.isnan(self.tp) and math.isnan(self.tsl))

    def check(
        self, bar_ms: int, o: float, h: float, lo: float, *, side: float | None = None
    ) -> tuple[int, float]:
        """Return ``(reason, exit_base)`` for the bar opening at ``bar_ms`` (-1: no exit).

        ``o``, ``h``, ``lo`` may be those of a bar still forming: a level its low (high) has
        reached is one the closed bar reaches too, so an exit found early is the kernel's.
        The state is not changed; call :meth:`close_bar` once the bar has closed.
        """
        side = self.side if side is None else side
        if not self.armed:
            return -1, 0.0
        reason, base, _ = stop_exit_nb(
            side,
            o,
            h,
            lo,
            self.entry_price,
            self.extreme,
            self.sl,
            self.tp,
            self.tsl,
            self.entry_bar_ms < bar_ms,
            self.tick,
        )
        return int(reason), float(base)

    def stop_level(self, *, side: float | None = None) -> tuple[int, float]:
        """Return ``(reason, level)`` of the stop the next bar is checked against.

        The level is the kernel's own (the tighter of the stop-loss and the trailing stop from
        the current extreme), found by running the kernel's check on a bar that reaches every
        price without gapping; ``reason`` is ``REASON_STOP_LOSS`` or ``REASON_TRAILING_STOP``,
        or -1 (level NaN) when neither is set.
        """
        side = self.side if side is None else side
        if math.isnan(self.sl) and math.isnan(self.tsl):
            return -1, math.nan
        # a bar spanning every price: the stop, checked before the target, is reached
        reason, level, _ = stop_exit_nb(
            side,
            0.0,
            math.inf,
            -math.inf,
            self.entry_price,
            self.extreme,
            self.sl,
            math.nan,
            self.tsl,
            False,
            self.tick,
        )
        return int(reason), float(level)

    def target_level(self, *, side: float | None = None) -> float:
        """Return the take-profit level the next bar is checked against (NaN: none).

        The kernel's own (on the tick for a ticked position), found as :meth:`stop_level` is.
        """
        side = self.side if side is None else side
        if math.isnan(self.tp):
            return math.nan
        # a bar wholly beyond the target (no stop is set, so none can win)
        far = math.inf if side > 0 else -math.inf
        _, level, _ = stop_exit_nb(
            side,
            far,
            far,
            far,
            self.entry_price,
            self.extreme,
            math.nan,
            self.tp,
            math.nan,
            False,
            self.tick,
        )
        return float(level)

    def close_bar(self, bar_ms: int, h: float, lo: float, *, side: float | None = None) -> None:
        """Take a closed bar's high (low for a short) into the trailing extreme.

        Bars before the entry's bar are ignored: the position did not exist then.
        """
        side = self.side if side is None else side
        if bar_ms < self.entry_bar_ms:
            return
        if side > 0:
            self.extreme = max(self.extreme, h)
        else:
            self.extreme = min(self.extreme, lo)
