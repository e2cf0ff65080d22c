"""The low-level backtest entry point: :func:`simulate` over the fused numba kernel.

This is the function the optimizer calls in its hot loop.  It takes precomputed signal arrays,
OHLC arrays and a frozen :class:`SimConfig`, and returns order records, trade records, the
equity curve and a statistics vector, with no per-call Python work beyond shaping the arrays::

    from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
    from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats

    cfg = SimConfig(fee_bps=10, fill="close")          # build once, reuse for every trial
    out = simulate(o, h, l, c, entries, exits, config=cfg, equity_out=buf)  # buf: reused
    sharpe = metrics_from_stats(out.stats, cfg.init_cash, periods_per_year=8760)["sharpe"]

Arrays are 1-D (one symbol) or 2-D ``(n_bars, n_symbols)`` sharing one cash balance; they may be
read-only (Ray's object store) and are never written.  Signals are bool arrays; ``None`` means
"never".  Pass ``equity_out=np.empty(0)`` to skip writing the equity curve (the statistics still
cover it), or a reused buffer of length ``n_bars`` to avoid an allocation per call.

Semantics (see :func:`~cryptoorchestrator.platform.backtest.nb.simulate_nb`): fills at the next
bar's open by default, or at the signal bar's close with ``fill="close"``; market orders with fees
and slippage (bps, against the trader) on every fill; precision (``qty_step``, ``price_tick``) and
minimums (``min_qty``, ``min_notional``) honoured, an order too small is skipped and counted in
``stats[S_SKIPPED_SMALL]``; an entry beyond ``max_open_positions`` is skipped and counted in
``stats[S_SKIPPED_LIMIT]``.  An entry while already in a position of the same direction is
ignored; an opposite entry reverses; an entry and an exit of one direction on one bar cancel.

Margin (``docs/backtest.md``, "Margin and liquidation"; the rule itself is
:mod:`cryptoorchestrator.platform.risk.margin`): an entry never takes gross exposure (the sum
of ``|qty x price|`` over symbols) above ``max_gross_leverage`` x equity, so short proceeds do
not fund further entries; one refused for that is counted in ``stats[S_SKIPPED_MARGIN]``.  With
``liquidation`` on, the account is liquidated, all positions at once, when what closing them
would leave is at most ``maintenance_margin`` x gross exposure, and it stops trading
(``stats[S_LIQUIDATED]``, ``stats[S_LIQUIDATION_BAR]``, orders with ``REASON_LIQUIDATION``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.risk import margin

FillMode = Literal["next_open", "close"]
SizeMode = Literal["fraction", "quote", "risk"]
_SIZE_MODES = {"fraction": nb.SIZE_FRACTION, "quote": nb.SIZE_QUOTE, "risk": nb.SIZE_RISK}
_FILLS = ("next_open", "close")
# about the most leverage crypto venues offer; a typo such as 1000 is refused
_MAX_LEVERAGE = 125.0


def _check_fraction(name: str, value: float | None, *, upper: float = 1.0) -> None:
    if value is None:
        return
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= upper):
        raise InvalidInputError(
            name,
            f"must be a fraction in (0, {upper}], got {value!r}",
            allowed=f"0 < {name} <= {upper}",
        )


def _per_symbol(name: str, value: float | Sequence[float]) -> tuple[float, ...]:
    values = (value,) if isinstance(value, int | float) else tuple(value)
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise InvalidInputError(name, f"must be finite and >= 0, got {v!r}", allowed=">= 0")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class SimConfig:
    """Frozen settings of one simulation; validated once, reused across many calls.

    Parameters
    ----------
    init_cash
        Starting cash in the quote currency.
    fee_bps, slippage_bps
        Fee charged on each fill's notional, and slippage against the trader, in basis points;
        the fee defaults to :data:`~cryptoorchestrator.platform.model.fees.DEFAULT_FEE_BPS`
        (Binance spot's base taker fee), the default of every entry point.
    fill
        ``"next_open"`` (default, no look-ahead) or ``"close"`` (the signal bar's close).
    size_mode, size
        ``"fraction"``: spend ``size`` x equity (fees included); ``"quote"``: spend ``size`` quote
        units; ``"risk"``: lose ``size`` x equity if the stop nearest to the entry (stop-loss or
        trailing stop) is hit; an entry without either is skipped and counted.
    max_position
        Largest position notional as a fraction of equity.
    max_open_positions
        Most positions open at once across symbols (``None``: no limit).
    stop_loss, take_profit, trailing_stop
        Default stops as fractions of the entry price (trailing: of the best price since entry).
    qty_step, min_qty, min_notional, price_tick
        Exchange precision and minimums, one value or one per symbol; 0 disables.  The price
        tick rounds fills against the trader and places stop and take-profit levels on the
        tick, never better than asked (``nb._stop_tick_nb``), exactly as a live bot's
        exchange orders rest (``docs/backtest.md``, "Stops and targets").
    close_at_end
        Close open positions at the last close (otherwise they are reported as open trades).
    allow_short
        Whether short signals are acted on.
    max_gross_leverage
        Cap on gross exposure (sum of ``|position value|`` over symbols) as a multiple of
        equity, checked at every entry: an entry is cut to the room left or refused.  Short
        proceeds count as exposure, never as free cash.  Above 1 a long may borrow the quote
        (cash goes negative); ``size`` and ``max_position`` may then go up to it.
    maintenance_margin
        Fraction of gross exposure below which the account is liquidated: when cash plus what
        closing every position would bring (fees and slippage included) is at most
        ``maintenance_margin`` x gross exposure, at the bar's adverse extremes.
    liquidation
        Whether margin calls liquidate: every position is closed inside the bar at the price
        where the margin runs out (at the open after a gap through it) and the run stops
        trading; equity then stays at the maintenance requirement, >= 0, unless a gap left it
        lower (even negative).  Off: the account may run into negative equity, as before.
    """

    init_cash: float = 10_000.0
    fee_bps: float = DEFAULT_FEE_BPS
    slippage_bps: float = 0.0
    fill: FillMode = "next_open"
    size_mode: SizeMode = "fraction"
    size: float = 1.0
    max_position: float = 1.0
    max_open_positions: int | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing_stop: float | None = None
    qty_step: float | tuple[float, ...] = 0.0
    min_qty: float | tuple[float, ...] = 0.0
    min_notional: float | tuple[float, ...] = 0.0
    price_tick: float | tuple[float, ...] = 0.0
    close_at_end: bool = False
    allow_short: bool = True
    max_gross_leverage: float = margin.MAX_GROSS_LEVERAGE
    maintenance_margin: float = margin.MAINTENANCE_MARGIN
    liquidation: bool = True
    _kernel: tuple[float, float, bool, int, float, float] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.init_cash) and self.init_cash > 0):
            raise InvalidInputError(
                "init_cash", f"must be > 0, got {self.init_cash!r}", allowed="> 0"
            )
        for name in ("fee_bps", "slippage_bps"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0 <= v < 10_000):
                raise InvalidInputError(
                    name,
                    f"must be in [0, 10000) basis points, got {v!r}",
                    allowed="0 <= bps < 10000",
                )
        if self.fill not in _FILLS:
            raise InvalidInputError("fill", f"unknown fill mode {self.fill!r}", allowed=_FILLS)
        if self.size_mode not in _SIZE_MODES:
            raise InvalidInputError(
                "size_mode", f"unknown sizing mode {self.size_mode!r}", allowed=tuple(_SIZE_MODES)
            )
        lev = self.max_gross_leverage
        if not (isinstance(lev, int | float) and math.isfinite(lev) and 0 < lev <= _MAX_LEVERAGE):
            raise InvalidInputError(
                "max_gross_leverage",
                f"must be in (0, {_MAX_LEVERAGE}], got {lev!r}",
                allowed=f"0 < max_gross_leverage <= {_MAX_LEVERAGE}",
            )
        mm = self.maintenance_margin
        if not (isinstance(mm, int | float) and math.isfinite(mm) and 0 <= mm < 1):
            raise InvalidInputError(
                "maintenance_margin",
                f"must be a fraction in [0, 1), got {mm!r}",
                allowed="0 <= maintenance_margin < 1",
            )
        # a fraction of equity may exceed 1 only on a levered account
        upper = max(1.0, float(lev))
        if self.size_mode == "quote":
            if not (math.isfinite(self.size) and self.size > 0):
                raise InvalidInputError(
                    "size", f"quote amount must be > 0, got {self.size!r}", allowed="> 0"
                )
        else:
            _check_fraction("size", self.size, upper=upper)
        _check_fraction("max_position", self.max_position, upper=upper)
        _check_fraction("stop_loss", self.stop_loss, upper=0.999999)
        _check_fraction("take_profit", self.take_profit, upper=1e6)
        _check_fraction("trailing_stop", self.trailing_stop, upper=0.999999)
        if self.max_open_positions is not None and (
            not isinstance(self.max_open_positions, int) or self.max_open_positions < 1
        ):
            raise InvalidInputError(
                "max_open_positions",
                f"must be a positive integer, got {self.max_open_positions!r}",
                allowed=">= 1",
            )
        for name in ("qty_step", "min_qty", "min_notional", "price_tick"):
            _per_symbol(name, getattr(self, name))
        object.__setattr__(
            self,
            "_kernel",
            (
                self.fee_bps / 10_000.0,
                self.slippage_bps / 10_000.0,
                self.fill == "close",
                _SIZE_MODES[self.size_mode],
                float(self.size),
                float(self.max_position),
            ),
        )

    def per_symbol(self, name: str, n_cols: int) -> np.ndarray:
        """Return the per-symbol setting ``name`` as a float64 array of length ``n_cols``."""
        values = _per_symbol(name, getattr(self, name))
        if len(values) == 1:
            return np.full(n_cols, values[0])
        if len(values) != n_cols:
            raise InvalidInputError(
                name,
                f"has {len(values)} values for {n_cols} symbols",
                allowed=f"one value or {n_cols}",
            )
        return np.asarray(values, dtype=np.float64)


class SimOutput(NamedTuple):
    """Raw output of :func:`simulate`: record arrays in the ``nb.O_*`` / ``nb.T_*`` layouts."""

    orders: np.ndarray
    trades: np.ndarray
    equity: np.ndarray
    stats: np.ndarray


_FALSE_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _as_2d(a: np.ndarray, dtype: type, name: str, shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != dtype:
        if dtype is np.bool_ and arr.dtype.kind not in "biu":
            raise InvalidInputError(
                name, f"must be a bool array, got dtype {arr.dtype}", allowed="bool"
            )
        arr = arr.astype(dtype)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim != 2:
        raise InvalidInputError(name, f"must be 1-D or 2-D, got {arr.ndim}-D", allowed="1-D, 2-D")
    if shape is not None and arr.shape != shape:
        raise InvalidInputError(
            name, f"has shape {arr.shape}, expected {shape}", allowed=f"shape {shape}"
        )
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def frozen(arr: np.ndarray) -> np.ndarray:
    """Return ``arr`` as a read-only view (no copy); ``arr`` itself if already read-only."""
    if not arr.flags.writeable:
        return arr
    view = arr.view()
    view.flags.writeable = False
    return view


def _false(shape: tuple[int, int]) -> np.ndarray:
    arr = _FALSE_CACHE.get(shape)
    if arr is None:
        arr = np.zeros(shape, dtype=np.bool_)
        arr.flags.writeable = False
        if len(_FALSE_CACHE) > 8:
            _FALSE_CACHE.clear()
        _FALSE_CACHE[shape] = arr
    return arr


def _stop(
    value: float | np.ndarray | None, default: float | None, name: str, shape: tuple[int, int]
) -> np.ndarray:
    if value is None:
        value = default
    if value is None:
        return np.full((1, shape[1]), np.nan)
    if isinstance(value, int | float):
        _check_fraction(name, float(value), upper=1e6)
        return np.full((1, shape[1]), float(value))
    arr = _as_2d(value, np.float64, name, None)
    if arr.shape[1] != shape[1] or arr.shape[0] not in (1, shape[0]):
        raise InvalidInputError(
            name,
            f"has shape {arr.shape}, expected (1 or {shape[0]}, {shape[1]})",
            allowed="a scalar or one value per bar",
        )
    return arr


def simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    long_entries: np.ndarray | None,
    long_exits: np.ndarray | None,
    short_entries: np.ndarray | None = None,
    short_exits: np.ndarray | None = None,
    *,
    config: SimConfig,
    stop_loss: float | np.ndarray | None = None,
    take_profit: float | np.ndarray | None = None,
    trailing_stop: float | np.ndarray | None = None,
    equity_out: np.ndarray | None = None,
) -> SimOutput:
    """Simulate trading the given signals; return records, equity and statistics.

    Prices must already be validated (finite, positive); see ``platform.strategy.bars``.
    Stops given here override the config's defaults and may be one value per bar (the signal
    bar's value applies to the position it opens).

    Raises
    ------
    InvalidInputError
        If a shape, dtype or setting is wrong.
    """
    close2 = _as_2d(close, np.float64, "close", None)
    shape: tuple[int, int] = close2.shape  # type: ignore[assignment]
    if shape[0] == 0:
        raise InvalidInputError("bars", "no bars to simulate", allowed=">= 1 bar")
    open2 = _as_2d(open_, np.float64, "open", shape)
    high2 = _as_2d(high, np.float64, "high", shape)
    low2 = _as_2d(low, np.float64, "low", shape)
    sigs = []
    for name, sig in (
        ("long_entries", long_entries),
        ("long_exits", long_exits),
        ("short_entries", short_entries),
        ("short_exits", short_exits),
    ):
        if sig is None or (not config.allow_short and name.startswith("short")):
            sigs.append(_false(shape))
        else:
            sigs.append(_as_2d(sig, np.bool_, name, shape))
    sl = _stop(stop_loss, config.stop_loss, "stop_loss", shape)
    tp = _stop(take_profit, config.take_profit, "take_profit", shape)
    tsl = _stop(trailing_stop, config.trailing_stop, "trailing_stop", shape)
    use_stops = bool(
        stop_loss is not None
        or take_profit is not None
        or trailing_stop is not None
        or config.stop_loss is not None
        or config.take_profit is not None
        or config.trailing_stop is not None
    )
    k = shape[1]
    if equity_out is None:
        equity_out = np.empty(shape[0], dtype=np.float64)
    elif equity_out.shape[0] not in (0, shape[0]) or equity_out.dtype != np.float64:
        raise InvalidInputError(
            "equity_out",
            "must be a float64 buffer of length n_bars or 0",
            allowed=f"length {shape[0]} or 0",
        )
    fee, slip, at_close, size_mode, size, max_pos = config._kernel
    kernel = nb.simulate_1d_nb if k == 1 else nb.simulate_nb
    # Every input read-only: numba compiles a kernel once per mix of writable and read-only
    # arguments, and callers pass both (Ray's object store, cached arrays, fresh ones).
    orders, trades, stats = kernel(
        frozen(open2),
        frozen(high2),
        frozen(low2),
        frozen(close2),
        frozen(sigs[0]),
        frozen(sigs[1]),
        frozen(sigs[2]),
        frozen(sigs[3]),
        frozen(sl),
        frozen(tp),
        frozen(tsl),
        frozen(config.per_symbol("qty_step", k)),
        frozen(config.per_symbol("min_qty", k)),
        frozen(config.per_symbol("min_notional", k)),
        frozen(config.per_symbol("price_tick", k)),
        float(config.init_cash),
        fee,
        slip,
        at_close,
        size_mode,
        size,
        max_pos,
        int(config.max_open_positions or k),
        bool(config.close_at_end),
        use_stops,
        equity_out,
        float(config.max_gross_leverage),
        float(config.maintenance_margin),
        bool(config.liquidation),
    )
    return SimOutput(orders, trades, equity_out, stats)
